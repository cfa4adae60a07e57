//! `[[dkim]]` and `[signing]`: the keys that sign outgoing mail, as the
//! config gives them (paths, names, choices). The keys themselves are
//! read by `dkim::SignerTable`, at start and reload.

use std::path::PathBuf;

use serde::{Serialize, Serializer};

use super::DurationSetting;
use crate::dkim::{Algorithm, Canonicalization};

/// One `[[dkim]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DkimSection {
    /// `d=`, lower case.
    pub domain: String,
    /// `s=`
    pub selector: String,
    /// PEM file: RSA (PKCS#8 or PKCS#1) or Ed25519 (PKCS#8).
    pub private_key: PathBuf,
    #[serde(serialize_with = "algorithm_text")]
    pub algorithm: Algorithm,
    /// `From:` domains signed, exactly; empty: `domain` and every domain
    /// under it.
    pub sender_domains: Vec<String>,
    /// Header names signed; `From` is always among them.
    pub headers: Vec<String>,
    #[serde(serialize_with = "canonicalization_text")]
    pub canonicalization: Canonicalization,
    /// From `t=` to `x=`; none: no `x=`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire: Option<DurationSetting>,
}

/// `[signing] threads` when not given: where messages are signed unless
/// the file says otherwise (0: on the shard that received them).
pub const DEFAULT_SIGNING_THREADS: usize = 0;
/// The most `[signing] threads` may be.
pub const MAX_SIGNING_THREADS: usize = 256;

/// `[signing]`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SigningSection {
    /// A directory of `<domain>/<selector>.pem` keys, each signing mail
    /// from its domain and the domains under it with the defaults; none
    /// (printed as `""`): no key directory.
    #[serde(serialize_with = "super::path_or_empty")]
    pub key_dir: Option<PathBuf>,
    /// Threads that do the private-key operation of each signature
    /// (`petrel-dkim`); 0: each shard signs the mail it receives itself.
    pub threads: usize,
}

impl Default for SigningSection {
    fn default() -> SigningSection {
        SigningSection {
            key_dir: None,
            threads: DEFAULT_SIGNING_THREADS,
        }
    }
}

impl SigningSection {
    pub fn is_inactive(&self) -> bool {
        *self == SigningSection::default()
    }
}

fn algorithm_text<S: Serializer>(value: &Algorithm, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value.name())
}

fn canonicalization_text<S: Serializer>(value: &Canonicalization, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}
