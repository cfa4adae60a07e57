//! Private keys from PEM files: RSA as PKCS#8 or PKCS#1, Ed25519 as
//! PKCS#8, the algorithm read from the key. Each refusal says why, and
//! the caller adds the file.

use std::path::Path;

use ring::signature::{Ed25519KeyPair, RsaKeyPair};
use rsa::pkcs1::{DecodeRsaPublicKey, RsaPrivateKey as Pkcs1Key};
use rsa::pkcs8::{EncodePublicKey, ObjectIdentifier, PrivateKeyInfo};
use rustls_pemfile::Item;

use super::sign::SigningKey;

/// RFC 8301 3.2: verifiers need not accept shorter RSA keys.
pub const MIN_RSA_BITS: usize = 1024;
/// ring signs with RSA moduli of 2048 to 4096 bits only.
pub const MIN_SIGNING_RSA_BITS: usize = 2048;
pub const MAX_SIGNING_RSA_BITS: usize = 4096;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// Reads and parses the private key in the PEM file at `path`; the error
/// is the reason alone.
pub fn load(path: &Path) -> Result<SigningKey, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    parse_pem(&pem)
}

/// The first private key in `pem`.
pub fn parse_pem(pem: &[u8]) -> Result<SigningKey, String> {
    let mut reader = pem;
    loop {
        match rustls_pemfile::read_one_from_slice(reader) {
            Ok(Some((Item::Pkcs8Key(key), _))) => return from_pkcs8(key.secret_pkcs8_der()),
            Ok(Some((Item::Pkcs1Key(key), _))) => return rsa_from_pkcs1(key.secret_pkcs1_der()),
            Ok(Some((Item::Sec1Key(_), _))) => {
                return Err("an EC (SEC1) key: DKIM signs with RSA or Ed25519 keys".to_owned())
            }
            Ok(Some((_, rest))) => reader = rest,
            Ok(None) => {
                return Err("no private key in it: expected a PEM block \
                     BEGIN PRIVATE KEY (PKCS#8) or BEGIN RSA PRIVATE KEY (PKCS#1)"
                    .to_owned())
            }
            Err(e) => return Err(format!("not valid PEM: {e:?}")),
        }
    }
}

fn from_pkcs8(der: &[u8]) -> Result<SigningKey, String> {
    let info = PrivateKeyInfo::try_from(der).map_err(|e| format!("not a PKCS#8 key: {e}"))?;
    match info.algorithm.oid {
        ED25519 => Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map(SigningKey::Ed25519)
            .map_err(|e| format!("not a usable Ed25519 key: {e}")),
        RSA_ENCRYPTION => {
            rsa_bits(info.private_key)?;
            RsaKeyPair::from_pkcs8(der)
                .map(SigningKey::Rsa)
                .map_err(|e| format!("not a usable RSA key: {e}"))
        }
        oid => Err(format!(
            "a key of algorithm {oid}: DKIM signs with RSA or Ed25519 keys"
        )),
    }
}

fn rsa_from_pkcs1(der: &[u8]) -> Result<SigningKey, String> {
    rsa_bits(der)?;
    RsaKeyPair::from_der(der)
        .map(SigningKey::Rsa)
        .map_err(|e| format!("not a usable RSA key: {e}"))
}

/// The modulus size of a PKCS#1 RSAPrivateKey, if petrel can sign with it.
fn rsa_bits(pkcs1: &[u8]) -> Result<usize, String> {
    let key = Pkcs1Key::try_from(pkcs1).map_err(|e| format!("not an RSA key: {e}"))?;
    let modulus = key.modulus.as_bytes();
    let bits = modulus.iter().position(|&b| b != 0).map_or(0, |i| {
        (modulus.len() - i) * 8 - modulus[i].leading_zeros() as usize
    });
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "an RSA key of {bits} bits, under the minimum of {MIN_RSA_BITS} (RFC 8301): \
             make a new one with `petrel dkim keygen`"
        ));
    }
    if !(MIN_SIGNING_RSA_BITS..=MAX_SIGNING_RSA_BITS).contains(&bits) {
        return Err(format!(
            "an RSA key of {bits} bits: petrel signs with RSA keys of \
             {MIN_SIGNING_RSA_BITS} to {MAX_SIGNING_RSA_BITS} bits"
        ));
    }
    Ok(bits)
}

/// An RSA public key (PKCS#1 DER, as ring gives it) as the
/// SubjectPublicKeyInfo DER that DKIM's `p=` holds.
pub fn rsa_spki(pkcs1_public: &[u8]) -> Vec<u8> {
    rsa::RsaPublicKey::from_pkcs1_der(pkcs1_public)
        .ok()
        .and_then(|key| key.to_public_key_der().ok())
        .map_or_else(Vec::new, |der| der.as_bytes().to_vec())
}
