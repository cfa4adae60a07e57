//! Internationalised domain names: U-labels to A-labels before lookup.
//!
//! Owns: turning a domain as it appears in an SMTPUTF8 address
//! (`bücher.example`) into the name DNS knows (`xn--bcher-kva.example`),
//! by IDNA 2008 as UTS 46 processes it (the `idna` crate). Must never:
//! allocate for an ASCII domain (the common case, left as it is), or let a
//! name that cannot be converted reach DNS as raw UTF-8.

use std::borrow::Cow;

use idna::AsciiDenyList;

use super::DnsError;

/// `domain` with every U-label as its A-label; an ASCII domain is returned
/// unchanged and borrowed.
pub fn to_ascii(domain: &str) -> Result<Cow<'_, str>, DnsError> {
    if domain.is_ascii() {
        return Ok(Cow::Borrowed(domain));
    }
    // STD3: host names hold letters, digits and hyphens only.
    idna::domain_to_ascii_cow(domain.as_bytes(), AsciiDenyList::STD3)
        .map_err(|_| DnsError::InvalidIdn(domain.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u_labels_become_a_labels() {
        assert_eq!(to_ascii("bücher.example").unwrap(), "xn--bcher-kva.example");
        // Case is folded as UTS 46 maps it, in every label.
        assert_eq!(to_ascii("BÜCHER.Example").unwrap(), "xn--bcher-kva.example");
        assert_eq!(
            to_ascii("Mail.bücher.example.").unwrap(),
            "mail.xn--bcher-kva.example."
        );
    }

    #[test]
    fn ascii_names_are_borrowed_unchanged() {
        for ascii in ["Example.COM", "xn--bcher-kva.example", "a_b.example"] {
            assert!(matches!(to_ascii(ascii), Ok(Cow::Borrowed(s)) if s == ascii));
        }
    }

    #[test]
    fn names_that_cannot_be_converted_are_invalid_idns() {
        // A label may not start with a combining mark; STD3 allows no
        // punctuation in a label.
        for bad in [
            "\u{301}bücher.example",
            "bü_cher.example",
            "bücher!.example",
        ] {
            assert_eq!(
                to_ascii(bad),
                Err(DnsError::InvalidIdn(bad.to_string())),
                "{bad:?}"
            );
            let message = DnsError::InvalidIdn(bad.to_string()).to_string();
            assert!(message.contains("not a valid internationalised domain name"));
            assert!(!DnsError::InvalidIdn(bad.to_string()).is_temporary());
        }
    }
}
