//! Signing one message with one key: the `DKIM-Signature` field from the
//! header section, the body hash and the time (RFC 6376 3.5 and 3.7).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::{digest, rand, signature};

use super::field::Folder;
use super::header::{self, Field};
use super::{canon, Algorithm, Canon, Canonicalization};

/// A private key ring can sign with.
pub enum SigningKey {
    Rsa(signature::RsaKeyPair),
    Ed25519(signature::Ed25519KeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        write!(f, "SigningKey({})", self.algorithm().name())
    }
}

/// Why a signature could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the RSA signature failed")]
    Rsa,
    #[error("the header section is longer than {0} bytes")]
    HeaderTooLong(usize),
    #[error("the signing thread ended without an answer")]
    Lost,
}

impl SigningKey {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            SigningKey::Rsa(_) => Algorithm::RsaSha256,
            SigningKey::Ed25519(_) => Algorithm::Ed25519Sha256,
        }
    }

    /// The public key as `p=` of the DNS record has it: for RSA the DER
    /// SubjectPublicKeyInfo (RFC 6376 3.6.1), for Ed25519 the 32 bytes of
    /// the key (RFC 8463 4.2).
    pub fn public_key_record(&self) -> Vec<u8> {
        match self {
            SigningKey::Rsa(key) => super::key::rsa_spki(key.public().as_ref()),
            SigningKey::Ed25519(key) => signature::KeyPair::public_key(key).as_ref().to_vec(),
        }
    }

    /// The signature of `data`, the canonical header fields and the
    /// signature field itself: RSASSA-PKCS1-v1_5 over SHA-256 of it, or
    /// Ed25519 over its SHA-256 (RFC 8463 3).
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, SignError> {
        match self {
            SigningKey::Rsa(key) => {
                let mut out = vec![0; key.public().modulus_len()];
                key.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rand::SystemRandom::new(),
                    data,
                    &mut out,
                )
                .map_err(|_| SignError::Rsa)?;
                Ok(out)
            }
            SigningKey::Ed25519(key) => {
                let hash = digest::digest(&digest::SHA256, data);
                Ok(key.sign(hash.as_ref()).as_ref().to_vec())
            }
        }
    }
}

/// One signing identity: `d=`, `s=`, the key and how it signs.
#[derive(Debug)]
pub struct Signer {
    pub domain: Box<str>,
    pub selector: Box<str>,
    pub key: SigningKey,
    pub canonicalization: Canonicalization,
    /// The header names to sign, as written in `h=`; `From` among them.
    pub headers: Box<[Box<str>]>,
    /// Seconds from `t=` to `x=`; none: no `x=`.
    pub expire: Option<u64>,
}

impl Signer {
    /// The `DKIM-Signature` field (with its CRLF) to put above `header`,
    /// whose body hashed to `body_hash` under this signer's body
    /// canonicalization; `now` is seconds since the Unix epoch.
    pub fn sign(
        &self,
        fields: &[Field<'_>],
        body_hash: &[u8; 32],
        now: u64,
    ) -> Result<String, SignError> {
        self.unsigned(fields, body_hash, now).sign(&self.key)
    }

    /// The field [`Signer::sign`] makes, but for the private-key operation.
    pub fn unsigned(&self, fields: &[Field<'_>], body_hash: &[u8; 32], now: u64) -> Unsigned {
        let h = header::signed_names(fields, &self.headers);
        let mut folder = Folder::new();
        folder.word("v=1;");
        folder.word(&format!("a={};", self.key.algorithm().name()));
        folder.word(&format!("c={};", self.canonicalization));
        folder.word(&format!("d={};", self.domain));
        folder.word(&format!("s={};", self.selector));
        folder.word(&format!("t={now};"));
        if let Some(expire) = self.expire {
            folder.word(&format!("x={};", now.saturating_add(expire)));
        }
        folder.list("h=", &h);
        folder.base64("bh=", &BASE64.encode(body_hash));
        let canon = self.canonicalization.header;
        let mut data = Vec::with_capacity(1024);
        header::signed_fields(canon, fields, &h, &mut data);
        signature_field(canon, folder.open_signature(), &mut data);
        Unsigned { folder, data }
    }
}

/// A `DKIM-Signature` field complete but for its signature: the data the
/// key signs (the canonical header fields and this field, a few hundred
/// bytes) and the text `b=` goes into. Everything per message but the
/// private-key operation, which [`Unsigned::sign`] does on whichever
/// thread has it.
pub struct Unsigned {
    folder: Folder,
    data: Vec<u8>,
}

impl Unsigned {
    /// The whole field, signed with `key`.
    pub fn sign(self, key: &SigningKey) -> Result<String, SignError> {
        let signature = key.sign(&self.data)?;
        Ok(self.folder.close_signature(&BASE64.encode(signature)))
    }
}

/// Appends the signature field itself, `b=` empty and without its CRLF,
/// as the last of the signed data (RFC 6376 3.7).
pub fn signature_field(canon: Canon, unsigned: &str, out: &mut Vec<u8>) {
    let mut field = Vec::with_capacity(unsigned.len() + 2);
    field.extend_from_slice(unsigned.as_bytes());
    field.extend_from_slice(b"\r\n");
    let start = out.len();
    canon::header_field(canon, &field, out);
    out.truncate(out.len().max(start + 2) - 2);
}
