//! SASL PLAIN (RFC 4616) and LOGIN decoding for AUTH (RFC 4954).
//!
//! Owns: base64 decoding of client responses and splitting PLAIN messages.
//! Must never: check a password (the I/O layer does, off the protocol
//! machine) or log what it decodes.

/// A client response that is not valid base64, or a PLAIN message that
/// is not `authzid NUL authcid NUL passwd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode SASL response")]
pub struct SaslError;

fn sextet(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decodes padded base64 (RFC 4648 4) and appends it to `out`. The SASL
/// empty response `=` decodes to nothing.
pub fn decode_base64(input: &[u8], out: &mut Vec<u8>) -> Result<(), SaslError> {
    if input == b"=" {
        return Ok(());
    }
    if input.len() & 3 != 0 {
        return Err(SaslError);
    }
    let quads = input.len() / 4;
    for (q, chunk) in input.chunks_exact(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && q + 1 != quads) {
            return Err(SaslError);
        }
        let mut v = 0u32;
        for &b in &chunk[..4 - pad] {
            v = (v << 6) | u32::from(sextet(b).ok_or(SaslError)?);
        }
        v <<= 6 * pad as u32;
        let bytes = [(v >> 16) as u8, (v >> 8) as u8, v as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(())
}

/// The three fields of a PLAIN message, borrowed from the decoded bytes.
pub type PlainFields<'a> = (&'a [u8], &'a [u8], &'a [u8]);

/// Splits a decoded PLAIN message into (authzid, authcid, password).
pub fn split_plain(msg: &[u8]) -> Result<PlainFields<'_>, SaslError> {
    let mut parts = msg.split(|&b| b == 0);
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(authz), Some(user), Some(pass), None) if !user.is_empty() && !pass.is_empty() => {
            Ok((authz, user, pass))
        }
        _ => Err(SaslError),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &[u8]) -> Result<Vec<u8>, SaslError> {
        let mut out = Vec::new();
        decode_base64(s, &mut out).map(|()| out)
    }

    #[test]
    fn base64_vectors() {
        assert_eq!(dec(b"").unwrap(), b"");
        assert_eq!(dec(b"=").unwrap(), b"");
        assert_eq!(dec(b"Zg==").unwrap(), b"f");
        assert_eq!(dec(b"Zm8=").unwrap(), b"fo");
        assert_eq!(dec(b"Zm9v").unwrap(), b"foo");
        assert_eq!(dec(b"Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(dec(b"AHVzZXIAcGFzcw==").unwrap(), b"\0user\0pass");
    }

    #[test]
    fn base64_errors() {
        for bad in [&b"Zg="[..], b"Zg=a", b"Z===", b"Zg==Zg==", b"Zm9*", b"*"] {
            assert_eq!(dec(bad), Err(SaslError), "{bad:?}");
        }
    }

    #[test]
    fn plain_split() {
        assert_eq!(split_plain(b"\0u\0p"), Ok((&b""[..], &b"u"[..], &b"p"[..])));
        assert_eq!(
            split_plain(b"a\0u\0p"),
            Ok((&b"a"[..], &b"u"[..], &b"p"[..]))
        );
        for bad in [&b"u\0p"[..], b"\0\0p", b"\0u\0", b"a\0u\0p\0x"] {
            assert_eq!(split_plain(bad), Err(SaslError));
        }
    }
}
