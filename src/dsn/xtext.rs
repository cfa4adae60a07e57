//! Decoding of RFC 3461 xtext (ENVID, ORCPT) and of the RFC 6533 `utf-8`
//! address forms an ORCPT may carry.
//!
//! Owns: turning the parameters as received back into the text a DSN shows.
//! Must never: pass on what it cannot decode: a malformed value is an error
//! and the caller leaves the field out rather than guess.

use thiserror::Error;

/// Why a value is not valid xtext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum XtextError {
    /// `+` not followed by two upper-case hex digits.
    #[error("malformed +XX escape in xtext")]
    BadHex,
    /// A byte xtext does not allow (space, control, `=`, 8-bit).
    #[error("byte {0:#04x} not allowed in xtext")]
    BadByte(u8),
    /// A `\x{...}` escape that is malformed or not a Unicode scalar value.
    #[error("malformed \\x{{...}} escape")]
    BadUnicodeEscape,
    /// ORCPT without `addr-type;` or with an empty address.
    #[error("ORCPT is not addr-type;address")]
    BadOrcpt,
}

/// An ORCPT value split and decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orcpt {
    /// The address type, lower-cased (`rfc822`, `utf-8`, ...).
    pub addr_type: String,
    /// The decoded address.
    pub address: Vec<u8>,
}

fn hex_val(b: u8) -> Option<u8> {
    // RFC 3461 4: hexchar uses upper-case digits only.
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `+XX` at the start of `v`, returning the octet.
fn plus_escape(v: &[u8]) -> Result<u8, XtextError> {
    match (
        v.get(1).copied().and_then(hex_val),
        v.get(2).copied().and_then(hex_val),
    ) {
        (Some(hi), Some(lo)) => Ok(hi << 4 | lo),
        _ => Err(XtextError::BadHex),
    }
}

/// Decodes RFC 3461 xtext: `xchar` (33..=126 except `+` and `=`) stands for
/// itself, `+XX` for the octet XX.
pub fn decode_xtext(v: &[u8]) -> Result<Vec<u8>, XtextError> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while let Some(&b) = v.get(i) {
        match b {
            b'+' => {
                out.push(plus_escape(&v[i..])?);
                i += 3;
            }
            b'=' => return Err(XtextError::BadByte(b)),
            33..=126 => {
                out.push(b);
                i += 1;
            }
            _ => return Err(XtextError::BadByte(b)),
        }
    }
    Ok(out)
}

/// Decodes `\x{HEX}` at the start of `v` (RFC 6533 EmbeddedUnicodeChar):
/// the character and the length of the escape.
fn unicode_escape(v: &[u8]) -> Result<(char, usize), XtextError> {
    let body = v.get(3..).ok_or(XtextError::BadUnicodeEscape)?;
    if !v.starts_with(b"\\x{") {
        return Err(XtextError::BadUnicodeEscape);
    }
    let close = memchr::memchr(b'}', body).ok_or(XtextError::BadUnicodeEscape)?;
    let digits = &body[..close];
    if digits.is_empty() || digits.len() > 6 {
        return Err(XtextError::BadUnicodeEscape);
    }
    let mut cp: u32 = 0;
    for &d in digits {
        let n = hex_val(d).ok_or(XtextError::BadUnicodeEscape)?;
        cp = cp << 4 | u32::from(n);
    }
    let c = char::from_u32(cp).ok_or(XtextError::BadUnicodeEscape)?;
    Ok((c, 3 + close + 1))
}

/// Decodes the RFC 6533 `utf-8` forms (xtext or unitext): `+XX`,
/// `\x{HEX}` and raw UTF-8 besides printable ASCII.
fn decode_utf8_addr(v: &[u8]) -> Result<Vec<u8>, XtextError> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while let Some(&b) = v.get(i) {
        match b {
            b'+' => {
                out.push(plus_escape(&v[i..])?);
                i += 3;
            }
            b'\\' if v[i..].starts_with(b"\\x{") => {
                let (c, n) = unicode_escape(&v[i..])?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                i += n;
            }
            b'=' => return Err(XtextError::BadByte(b)),
            33..=126 | 0x80..=0xff => {
                out.push(b);
                i += 1;
            }
            _ => return Err(XtextError::BadByte(b)),
        }
    }
    if std::str::from_utf8(&out).is_err() {
        return Err(XtextError::BadUnicodeEscape);
    }
    Ok(out)
}

/// Splits and decodes an ORCPT value as received (`addr-type;xtext`).
pub fn decode_orcpt(v: &[u8]) -> Result<Orcpt, XtextError> {
    let semi = memchr::memchr(b';', v).ok_or(XtextError::BadOrcpt)?;
    let (kind, value) = (&v[..semi], &v[semi + 1..]);
    let kind_ok = kind
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b));
    if kind.is_empty() || !kind_ok || value.is_empty() {
        return Err(XtextError::BadOrcpt);
    }
    let addr_type = String::from_utf8_lossy(kind).to_ascii_lowercase();
    let address = if addr_type == "utf-8" {
        decode_utf8_addr(value)?
    } else {
        decode_xtext(value)?
    };
    Ok(Orcpt { addr_type, address })
}
