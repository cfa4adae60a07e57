//! RFC 3461 xtext (ENVID, ORCPT, AUTH=) and the RFC 6533 `utf-8` address
//! forms an ORCPT may carry: the one grammar that both checks parameters
//! as they arrive and decodes them for a DSN.
//!
//! Owns: the xtext grammar, checking and decoding.
//! Must never: allocate while checking (commands are checked in place), or
//! pass on what it cannot decode: a malformed value is an error and the
//! caller refuses the command or leaves the field out rather than guess.

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

/// One xtext unit at the start of `v`, whose first byte is `first`: the
/// octet it stands for and how many bytes it took. `raw_8bit` admits
/// octets 0x80..=0xff as themselves, as the RFC 6533 `utf-8` forms do.
fn unit(first: u8, v: &[u8], raw_8bit: bool) -> Result<(u8, usize), XtextError> {
    match first {
        b'+' => plus_escape(v).map(|octet| (octet, 3)),
        b'=' => Err(XtextError::BadByte(first)),
        33..=126 => Ok((first, 1)),
        0x80..=0xff if raw_8bit => Ok((first, 1)),
        _ => Err(XtextError::BadByte(first)),
    }
}

/// Checks xtext (RFC 3461 4: `xchar` is 33..=126 except `+` and `=`,
/// `hexchar` is `+` and two upper-case hex digits) without decoding it;
/// `raw_8bit` as for the `utf-8` address type.
pub fn check_xtext(mut v: &[u8], raw_8bit: bool) -> Result<(), XtextError> {
    while let Some(&first) = v.first() {
        let (_, n) = unit(first, v, raw_8bit)?;
        v = &v[n..];
    }
    Ok(())
}

/// Non-empty and valid xtext, as ENVID and AUTH= must be.
pub fn is_xtext(v: &[u8]) -> bool {
    !v.is_empty() && check_xtext(v, false).is_ok()
}

/// Decodes RFC 3461 xtext: `xchar` stands for itself, `+XX` for the
/// octet XX.
pub fn decode_xtext(mut v: &[u8]) -> Result<Vec<u8>, XtextError> {
    let mut out = Vec::with_capacity(v.len());
    while let Some(&first) = v.first() {
        let (octet, n) = unit(first, v, false)?;
        out.push(octet);
        v = &v[n..];
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
fn decode_utf8_addr(mut v: &[u8]) -> Result<Vec<u8>, XtextError> {
    let mut out = Vec::with_capacity(v.len());
    while let Some(&first) = v.first() {
        let n = if v.starts_with(b"\\x{") {
            let (c, n) = unicode_escape(v)?;
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            n
        } else {
            let (octet, n) = unit(first, v, true)?;
            out.push(octet);
            n
        };
        v = &v[n..];
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

/// Appends `\x{HEX}` for `c` (RFC 6533 EmbeddedUnicodeChar).
pub fn push_escape(out: &mut Vec<u8>, c: u32) {
    out.extend_from_slice(format!("\\x{{{c:X}}}").as_bytes());
}

/// Appends `addr` in RFC 6533 utf-8-addr-xtext form: QCHAR (printable
/// ASCII but `+`, `=` and `\`) as is, everything else escaped.
pub fn push_utf8_addr_xtext(out: &mut Vec<u8>, addr: &[u8]) {
    for chunk in addr.utf8_chunks() {
        for c in chunk.valid().chars() {
            if matches!(c, '!'..='~') && !matches!(c, '+' | '=' | '\\') {
                out.push(c as u8);
            } else {
                push_escape(out, u32::from(c));
            }
        }
        for &b in chunk.invalid() {
            push_escape(out, u32::from(b));
        }
    }
}

/// Appends `v` as xtext (RFC 3461 4): printable ASCII but `+` and `=` as
/// is, every other octet as `+HH`.
pub fn push_xtext(out: &mut Vec<u8>, v: &[u8]) {
    for &b in v {
        if (0x21..=0x7e).contains(&b) && b != b'+' && b != b'=' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("+{b:02X}").as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext_decoding() {
        assert_eq!(decode_xtext(b"+2B"), Ok(b"+".to_vec()));
        assert_eq!(decode_xtext(b"a+2Bb+3Dc"), Ok(b"a+b=c".to_vec()));
        assert_eq!(decode_xtext(b""), Ok(Vec::new()));
        assert_eq!(decode_xtext(b"+0D+0A"), Ok(b"\r\n".to_vec()));
        assert_eq!(decode_xtext(b"+2b"), Err(XtextError::BadHex));
        assert_eq!(decode_xtext(b"+2"), Err(XtextError::BadHex));
        assert_eq!(decode_xtext(b"x+"), Err(XtextError::BadHex));
        assert_eq!(decode_xtext(b"+G0"), Err(XtextError::BadHex));
        assert_eq!(decode_xtext(b"a=b"), Err(XtextError::BadByte(b'=')));
        assert_eq!(decode_xtext(b"a b"), Err(XtextError::BadByte(b' ')));
        assert_eq!(decode_xtext(b"\xc3\xa9"), Err(XtextError::BadByte(0xc3)));
    }

    #[test]
    fn orcpt_decoding() {
        let o = decode_orcpt(b"RFC822;a+2Bb@x.example");
        assert_eq!(
            o,
            Ok(Orcpt {
                addr_type: "rfc822".into(),
                address: b"a+b@x.example".to_vec()
            })
        );
        let o = decode_orcpt(b"utf-8;j\\x{E9}r\\x{F4}me@x.example");
        assert_eq!(
            o.map(|o| o.address),
            Ok("jérôme@x.example".as_bytes().to_vec())
        );
        let o = decode_orcpt("utf-8;jérôme@x.example".as_bytes());
        assert_eq!(
            o.map(|o| o.address),
            Ok("jérôme@x.example".as_bytes().to_vec())
        );
        assert_eq!(decode_orcpt(b"a@x.example"), Err(XtextError::BadOrcpt));
        assert_eq!(decode_orcpt(b";a@x"), Err(XtextError::BadOrcpt));
        assert_eq!(decode_orcpt(b"rfc822;"), Err(XtextError::BadOrcpt));
        assert!(decode_orcpt(b"utf-8;\\x{D800}@x").is_err());
        assert!(decode_orcpt(b"utf-8;\\x{}@x").is_err());
        assert!(decode_orcpt(b"utf-8;\\x{E9@x").is_err());
        assert!(decode_orcpt(b"rfc822;\xc3\xa9@x").is_err());
    }

    #[test]
    fn checking_agrees_with_decoding() {
        for v in [
            &b"abc+2Bd"[..],
            b"a+zz",
            b"a=b",
            b"",
            b"x+",
            b"\xc3\xa9",
            b"a b",
        ] {
            assert_eq!(check_xtext(v, false), decode_xtext(v).map(drop), "{v:?}");
        }
        assert_eq!(check_xtext(b"\xc3\xa9+2B", true), Ok(()));
        assert!(!is_xtext(b""));
        assert!(is_xtext(b"abc+2Bd"));
    }
}
