//! `petrel dkim keygen`: a new private key as PKCS#8 PEM, written with
//! mode 0600, and the DNS TXT record that publishes its public key.
//!
//! ring makes Ed25519 keys but not RSA keys; RSA keys come from the
//! RustCrypto `rsa` crate, used here only to generate (signing is ring's).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};

use super::key::{self, MAX_SIGNING_RSA_BITS, MIN_SIGNING_RSA_BITS};
use super::Algorithm;

/// `--bits` default: what RFC 8301 recommends and receivers expect.
pub const DEFAULT_RSA_BITS: usize = 2048;
/// A DNS character-string holds at most 255 bytes (RFC 1035 3.3).
const TXT_STRING: usize = 255;

/// A generated key: its PEM text and its `p=` bytes.
pub struct NewKey {
    pub pem: String,
    pub public: Vec<u8>,
}

/// A new private key of `algorithm` (`bits` applies to RSA only).
pub fn generate(algorithm: Algorithm, bits: usize) -> Result<NewKey, String> {
    let der = match algorithm {
        Algorithm::Ed25519Sha256 => {
            let rng = ring::rand::SystemRandom::new();
            ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| "generating an Ed25519 key failed".to_owned())?
                .as_ref()
                .to_vec()
        }
        Algorithm::RsaSha256 => {
            if !(MIN_SIGNING_RSA_BITS..=MAX_SIGNING_RSA_BITS).contains(&bits) {
                return Err(format!(
                    "--bits {bits}: petrel signs with RSA keys of {MIN_SIGNING_RSA_BITS} to {MAX_SIGNING_RSA_BITS} bits"
                ));
            }
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, bits)
                .map_err(|e| format!("generating an RSA key failed: {e}"))?;
            key.to_pkcs8_der()
                .map_err(|e| format!("encoding the RSA key failed: {e}"))?
                .as_bytes()
                .to_vec()
        }
    };
    let pem = rsa::pkcs8::der::pem::encode_string("PRIVATE KEY", LineEnding::LF, &der)
        .map_err(|e| format!("encoding the key as PEM failed: {e}"))?;
    // Read back as petrel will read it at start: what is written is usable.
    let public = key::parse_pem(pem.as_bytes())?.public_key_record();
    Ok(NewKey { pem, public })
}

/// The TXT record to publish, its text split into strings of at most 255
/// bytes that a resolver joins again (RFC 6376 3.6.2.2).
pub fn dns_record(selector: &str, domain: &str, algorithm: Algorithm, public: &[u8]) -> String {
    let text = format!(
        "v=DKIM1; k={}; p={}",
        algorithm.key_type(),
        BASE64.encode(public)
    );
    let strings: Vec<String> = text
        .as_bytes()
        .chunks(TXT_STRING)
        .map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk)))
        .collect();
    format!(
        "{selector}._domainkey.{domain} IN TXT {}",
        strings.join(" ")
    )
}

/// Writes `pem` to `<out>/<domain>/<selector>.pem` (the `key_dir`
/// layout), mode 0600, never over an existing file.
pub fn write(out: &Path, domain: &str, selector: &str, pem: &str) -> Result<PathBuf, String> {
    let dir = out.join(domain);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("{}: cannot create the directory: {e}", dir.display()))?;
    let path = dir.join(format!("{selector}.pem"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("{}: cannot create it: {e}", path.display()))?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: cannot write it: {e}", path.display()))?;
    Ok(path)
}
