//! SASL PLAIN (RFC 4616) and LOGIN decoding for AUTH (RFC 4954).
//!
//! Owns: base64 decoding of client responses and splitting PLAIN messages.
//! Must never: check a password (the I/O layer does, off the protocol
//! machine) or log what it decodes.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

/// A client response that is not valid base64, or a PLAIN message that
/// is not `authzid NUL authcid NUL passwd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode SASL response")]
pub struct SaslError;

/// RFC 4648 base64 with padding required, as RFC 4954 4 asks of
/// responses. Non-zero bits after the last full octet are ignored rather
/// than refused: clients that leave them set have always been accepted.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes padded base64 (RFC 4648 4) and appends it to `out`. The SASL
/// empty response `=` decodes to nothing.
pub fn decode_base64(input: &[u8], out: &mut Vec<u8>) -> Result<(), SaslError> {
    if input == b"=" {
        return Ok(());
    }
    BASE64.decode_vec(input, out).map_err(|_| SaslError)
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
        // Bits past the last octet are ignored, not refused.
        assert_eq!(dec(b"Zh==").unwrap(), b"f");
        assert_eq!(dec(b"Zm9=").unwrap(), b"fo");
    }

    #[test]
    fn login_prompts_are_base64_of_their_text() {
        use crate::smtp::reply::{AUTH_LOGIN_PASS, AUTH_LOGIN_USER};
        assert_eq!(AUTH_LOGIN_USER.text, BASE64.encode("Username:"));
        assert_eq!(AUTH_LOGIN_PASS.text, BASE64.encode("Password:"));
    }

    #[test]
    fn base64_errors() {
        for bad in [
            &b"Zg="[..],
            b"Zg=a",
            b"Z===",
            b"Zg==Zg==",
            b"Zm9*",
            b"*",
            b"Zg",
            b"Zm9v\r\n",
            b" Zm9v",
            b"====",
        ] {
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
