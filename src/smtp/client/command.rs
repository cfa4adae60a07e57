//! The envelope handed to the client and the MAIL/RCPT command lines made
//! from it (RFC 5321 4.1.1, parameters of RFC 1870, 6152, 3030, 6531, 3461).
//!
//! Owns: which parameters go on the wire for a given set of extensions.
//! Must never: send a parameter the server did not offer (it would be
//! refused with 555), or write a field that could break the command line.

use super::ehlo::Extensions;
use super::{Body, Ret};

/// NOTIFY bits of [`TxRecipient::notify`]; 0 means no NOTIFY parameter.
pub mod notify {
    pub const SUCCESS: u8 = 1;
    pub const FAILURE: u8 = 2;
    pub const DELAY: u8 = 4;
    pub const NEVER: u8 = 8;
}

/// One recipient as it came from the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxRecipient<'a> {
    /// `local@domain`, no brackets.
    pub address: &'a [u8],
    /// [`notify`] bits.
    pub notify: u8,
    /// `addr-type;xtext`, still encoded; empty for none.
    pub orcpt: &'a [u8],
}

/// One message to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transaction<'a> {
    /// Empty for the null sender `<>`.
    pub reverse_path: &'a [u8],
    pub recipients: &'a [TxRecipient<'a>],
    /// Body size in octets, as stored (SIZE is an estimate, RFC 1870).
    pub size: u64,
    pub body: Body,
    /// The envelope needs SMTPUTF8 (also assumed for non-ASCII addresses).
    pub smtputf8: bool,
    /// The RET parameter to pass on, if the sender gave one.
    pub ret: Option<Ret>,
    /// Still xtext-encoded; empty for none.
    pub envid: &'a [u8],
}

impl Transaction<'_> {
    /// False when a field would break the command line.
    pub(super) fn is_writable(&self) -> bool {
        let path_ok = |p: &[u8]| {
            !p.iter()
                .any(|&b| matches!(b, b'\r' | b'\n' | 0 | b'<' | b'>'))
        };
        let param_ok = |p: &[u8]| p.iter().all(|&b| b.is_ascii_graphic() && b != b'=');
        path_ok(self.reverse_path)
            && param_ok(self.envid)
            && self
                .recipients
                .iter()
                .all(|r| !r.address.is_empty() && path_ok(r.address) && param_ok(r.orcpt))
    }

    /// SMTPUTF8 is needed for the flag or for any non-ASCII address.
    pub(super) fn needs_smtputf8(&self) -> bool {
        self.smtputf8
            || !self.reverse_path.is_ascii()
            || self.recipients.iter().any(|r| !r.address.is_ascii())
    }
}

/// Appends `MAIL FROM:<path> [params] CRLF`.
pub(super) fn write_mail(out: &mut Vec<u8>, tx: &Transaction<'_>, ext: &Extensions) {
    out.extend_from_slice(b"MAIL FROM:<");
    out.extend_from_slice(tx.reverse_path);
    out.push(b'>');
    if ext.size.is_some() {
        out.extend_from_slice(b" SIZE=");
        let mut digits = [0u8; 20];
        out.extend_from_slice(crate::smtp::reply::format_u64(tx.size, &mut digits));
    }
    match tx.body {
        Body::EightBitMime if ext.eight_bit_mime => out.extend_from_slice(b" BODY=8BITMIME"),
        Body::BinaryMime => out.extend_from_slice(b" BODY=BINARYMIME"),
        _ => {}
    }
    if tx.needs_smtputf8() {
        out.extend_from_slice(b" SMTPUTF8");
    }
    if ext.dsn {
        match tx.ret {
            Some(Ret::Full) => out.extend_from_slice(b" RET=FULL"),
            Some(Ret::Headers) => out.extend_from_slice(b" RET=HDRS"),
            None => {}
        }
        if !tx.envid.is_empty() {
            out.extend_from_slice(b" ENVID=");
            out.extend_from_slice(tx.envid);
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `RCPT TO:<address> [params] CRLF`.
pub(super) fn write_rcpt(out: &mut Vec<u8>, r: &TxRecipient<'_>, ext: &Extensions) {
    out.extend_from_slice(b"RCPT TO:<");
    out.extend_from_slice(r.address);
    out.push(b'>');
    if ext.dsn {
        write_notify(out, r.notify);
        if !r.orcpt.is_empty() {
            out.extend_from_slice(b" ORCPT=");
            out.extend_from_slice(r.orcpt);
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn write_notify(out: &mut Vec<u8>, bits: u8) {
    if bits == 0 {
        return;
    }
    out.extend_from_slice(b" NOTIFY=");
    // RFC 3461 4.1: NEVER stands alone.
    if bits & notify::NEVER != 0 {
        out.extend_from_slice(b"NEVER");
        return;
    }
    let names: [(u8, &[u8]); 3] = [
        (notify::SUCCESS, b"SUCCESS"),
        (notify::FAILURE, b"FAILURE"),
        (notify::DELAY, b"DELAY"),
    ];
    let mut first = true;
    for (bit, name) in names {
        if bits & bit != 0 {
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(name);
            first = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: TxRecipient<'static> = TxRecipient {
        address: b"a@example.com",
        notify: 0,
        orcpt: b"",
    };

    fn tx<'a>(rcpts: &'a [TxRecipient<'a>]) -> Transaction<'a> {
        Transaction {
            reverse_path: b"s@example.org",
            recipients: rcpts,
            size: 1234,
            body: Body::SevenBit,
            smtputf8: false,
            ret: None,
            envid: b"",
        }
    }

    fn mail(t: &Transaction<'_>, ext: &Extensions) -> String {
        let mut out = Vec::new();
        write_mail(&mut out, t, ext);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn rcpt(r: &TxRecipient<'_>, ext: &Extensions) -> String {
        let mut out = Vec::new();
        write_rcpt(&mut out, r, ext);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn plain_commands_without_extensions() {
        let none = Extensions::default();
        let mut t = tx(&[R]);
        t.ret = Some(Ret::Full);
        t.envid = b"ID1";
        t.body = Body::EightBitMime;
        assert_eq!(mail(&t, &none), "MAIL FROM:<s@example.org>\r\n");
        let r = TxRecipient {
            notify: notify::FAILURE,
            orcpt: b"rfc822;a@example.com",
            ..R
        };
        assert_eq!(rcpt(&r, &none), "RCPT TO:<a@example.com>\r\n");
    }

    #[test]
    fn parameters_when_offered() {
        let all = Extensions {
            size: Some(0),
            eight_bit_mime: true,
            dsn: true,
            smtputf8: true,
            ..Extensions::default()
        };
        let mut t = tx(&[R]);
        t.ret = Some(Ret::Headers);
        t.envid = b"QQ+2B1";
        t.body = Body::EightBitMime;
        t.smtputf8 = true;
        assert_eq!(
            mail(&t, &all),
            "MAIL FROM:<s@example.org> SIZE=1234 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ+2B1\r\n"
        );
        let r = TxRecipient {
            notify: notify::SUCCESS | notify::DELAY,
            orcpt: b"rfc822;a@example.com",
            ..R
        };
        assert_eq!(
            rcpt(&r, &all),
            "RCPT TO:<a@example.com> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;a@example.com\r\n"
        );
        let never = TxRecipient {
            notify: notify::NEVER | notify::SUCCESS,
            ..R
        };
        assert_eq!(
            rcpt(&never, &all),
            "RCPT TO:<a@example.com> NOTIFY=NEVER\r\n"
        );
    }

    #[test]
    fn null_sender() {
        let mut t = tx(&[R]);
        t.reverse_path = b"";
        assert_eq!(mail(&t, &Extensions::default()), "MAIL FROM:<>\r\n");
    }

    #[test]
    fn unwritable_fields_refused() {
        let bad = TxRecipient {
            address: b"a@b\r\nRSET",
            ..R
        };
        assert!(!tx(&[bad]).is_writable());
        let bad_orcpt = TxRecipient {
            orcpt: b"rfc822;a b",
            ..R
        };
        assert!(!tx(&[bad_orcpt]).is_writable());
        let mut t = tx(&[R]);
        t.reverse_path = b"x>";
        assert!(!t.is_writable());
        assert!(tx(&[R]).is_writable());
    }

    #[test]
    fn utf8_address_needs_smtputf8() {
        let r = TxRecipient {
            address: "j\u{f6}rg@example.com".as_bytes(),
            ..R
        };
        assert!(tx(&[r]).needs_smtputf8());
        assert!(!tx(&[R]).needs_smtputf8());
    }
}
