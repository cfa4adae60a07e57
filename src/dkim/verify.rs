//! Checking a `DKIM-Signature` field as a verifier does, with the public
//! key given (no DNS): the body hash, then the signature over the
//! canonical header fields. What petrel's own tests check its signatures
//! with; petrel never verifies mail it relays.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::signature::{self, UnparsedPublicKey};
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;

use super::header::{fields, signed_fields};
use super::sign::signature_field;
use super::{BodyHasher, Canonicalization};

/// Checks `field` (one `DKIM-Signature` field, with its name) over
/// `header` and `body` with the key as `p=` publishes it (for RSA a DER
/// SubjectPublicKeyInfo, for Ed25519 the 32 bytes). Returns the tags,
/// whitespace removed.
pub fn verify(
    field: &str,
    header: &[u8],
    body: &[u8],
    p: &[u8],
) -> Result<Vec<(String, String)>, String> {
    let value = field.split_once(':').ok_or("no colon")?.1;
    let tags: Vec<(String, String)> = value
        .split(';')
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| {
            let strip = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
            (strip(k), strip(v))
        })
        .collect();
    let tag = |name: &str| {
        tags.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let c = Canonicalization::parse(&tag("c"))?;
    let mut hasher = BodyHasher::new(c.body);
    hasher.update(body);
    if BASE64.encode(hasher.finish()) != tag("bh") {
        return Err("body hash differs".into());
    }
    let h: Vec<String> = tag("h").split(':').map(str::to_owned).collect();
    let h: Vec<&str> = h.iter().map(String::as_str).collect();
    let mut data = Vec::new();
    signed_fields(c.header, &fields(header), &h, &mut data);
    let b_at = field.rfind("b=").ok_or("no b=")?;
    signature_field(c.header, &field[..b_at + 2], &mut data);
    let sig = BASE64.decode(tag("b")).map_err(|e| e.to_string())?;
    let ok = match tag("a").as_str() {
        "rsa-sha256" => verify_rsa(p, &data, &sig),
        "ed25519-sha256" => {
            let hash = ring::digest::digest(&ring::digest::SHA256, &data);
            UnparsedPublicKey::new(&signature::ED25519, p).verify(hash.as_ref(), &sig)
        }
        a => return Err(format!("a={a}")),
    };
    ok.map_err(|_| "signature does not verify".to_owned())?;
    Ok(tags)
}

/// Verifies an RSA signature with ring, the key as `p=` has it.
pub fn verify_rsa(spki: &[u8], data: &[u8], sig: &[u8]) -> Result<(), ring::error::Unspecified> {
    let pkcs1 = rsa::RsaPublicKey::from_public_key_der(spki)
        .map_err(|_| ring::error::Unspecified)?
        .to_pkcs1_der()
        .map_err(|_| ring::error::Unspecified)?;
    UnparsedPublicKey::new(
        &signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
        pkcs1.as_bytes(),
    )
    .verify(data, sig)
}
