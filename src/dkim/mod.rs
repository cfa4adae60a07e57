//! DKIM signing (RFC 6376, with Ed25519 from RFC 8463): which keys sign a
//! message, and the `DKIM-Signature` fields they add.
//!
//! Owns: canonicalization and the body hash ([`canon`]), the choice of
//! header fields ([`header`]), the field's text ([`field`]), signing with
//! ring ([`sign`]), the private keys ([`key`], [`keygen`]) and the table
//! of signers by `From:` domain, built once from the config and the key
//! directory ([`table`]). The signing code is pure: it is given the header
//! section, the body in chunks and the time, and returns text; it never
//! reads a file, a clock or the network, and never changes the message it
//! signs. Keys are read only when the table is built (at start and reload).

#![deny(unsafe_code)]

pub mod canon;
pub mod field;
pub mod header;
pub mod key;
pub mod keygen;
pub mod message;
pub mod sign;
pub mod table;
pub mod verify;

use std::fmt;

pub use canon::BodyHasher;
pub use header::{fields, Field};
pub use sign::{SignError, Signer, SigningKey, Unsigned};
pub use table::{KeyError, SignerTable};

/// The header fields signed by default: those RFC 6376 5.4.1 recommends,
/// and the ones bulk mail carries that receivers look at.
pub const DEFAULT_HEADERS: [&str; 15] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Feedback-ID",
];

/// `a=`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RsaSha256,
    Ed25519Sha256,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }

    /// `k=` of the DNS record.
    pub fn key_type(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa",
            Algorithm::Ed25519Sha256 => "ed25519",
        }
    }

    pub fn parse(text: &str) -> Result<Algorithm, String> {
        match text {
            "rsa-sha256" => Ok(Algorithm::RsaSha256),
            "ed25519-sha256" => Ok(Algorithm::Ed25519Sha256),
            _ => Err(format!(
                "algorithm {text:?} is not one of \"rsa-sha256\", \"ed25519-sha256\""
            )),
        }
    }
}

/// One half of `c=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Canon {
    Simple,
    Relaxed,
}

impl Canon {
    fn name(self) -> &'static str {
        match self {
            Canon::Simple => "simple",
            Canon::Relaxed => "relaxed",
        }
    }
}

/// `c=`: header and body canonicalization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Canonicalization {
    pub header: Canon,
    pub body: Canon,
}

impl Canonicalization {
    /// `relaxed/relaxed`: survives the whitespace changes and refolding
    /// that relays make.
    pub const DEFAULT: Canonicalization = Canonicalization {
        header: Canon::Relaxed,
        body: Canon::Relaxed,
    };

    pub fn parse(text: &str) -> Result<Canonicalization, String> {
        let canon = |part: &str| match part {
            "simple" => Some(Canon::Simple),
            "relaxed" => Some(Canon::Relaxed),
            _ => None,
        };
        text.split_once('/')
            .and_then(|(h, b)| Some(Canonicalization { header: canon(h)?, body: canon(b)? }))
            .ok_or_else(|| format!(
                "canonicalization {text:?} is not one of \"relaxed/relaxed\", \"simple/simple\", \"relaxed/simple\", \"simple/relaxed\""
            ))
    }
}

impl fmt::Display for Canonicalization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.header.name(), self.body.name())
    }
}

/// Signing one message with several signers: the body goes through at
/// most one hasher per body canonicalization, whatever the number of
/// signers, and each signer adds its own field.
pub struct MessageSigning<'a> {
    signers: &'a [&'a Signer],
    hashers: Vec<BodyHasher>,
    /// For each signer, the index of its hasher.
    hasher_of: Vec<usize>,
}

impl<'a> MessageSigning<'a> {
    pub fn new(signers: &'a [&'a Signer]) -> MessageSigning<'a> {
        let mut hashers: Vec<BodyHasher> = Vec::with_capacity(2);
        let mut hasher_of = Vec::with_capacity(signers.len());
        for signer in signers {
            let canon = signer.canonicalization.body;
            let at = match hashers.iter().position(|h| h.canon() == canon) {
                Some(at) => at,
                None => {
                    hashers.push(BodyHasher::new(canon));
                    hashers.len() - 1
                }
            };
            hasher_of.push(at);
        }
        MessageSigning {
            signers,
            hashers,
            hasher_of,
        }
    }

    /// The next bytes of the body, as they will be sent.
    pub fn update(&mut self, chunk: &[u8]) {
        for hasher in &mut self.hashers {
            hasher.update(chunk);
        }
    }

    /// The fields to put above `header`, one per signer, in their order.
    pub fn finish(self, header: &[u8], now: u64) -> Result<String, SignError> {
        let signers = self.signers;
        let mut out = String::new();
        for (signer, field) in signers.iter().zip(self.unsigned(header, now)) {
            out.push_str(&field.sign(&signer.key)?);
        }
        Ok(out)
    }

    /// The fields to put above `header`, one per signer, in their order,
    /// each but for its private-key operation.
    pub fn unsigned(self, header: &[u8], now: u64) -> Vec<Unsigned> {
        let hashes: Vec<[u8; 32]> = self.hashers.into_iter().map(BodyHasher::finish).collect();
        let fields = header::fields(header);
        self.signers
            .iter()
            .zip(&self.hasher_of)
            .map(|(signer, &at)| signer.unsigned(&fields, &hashes[at], now))
            .collect()
    }
}

#[cfg(test)]
mod table_tests;
#[cfg(test)]
pub(crate) mod tests;
