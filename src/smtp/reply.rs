//! SMTP replies: a reply code, an enhanced status code (RFC 2034/3463) and
//! text, written into a caller-owned buffer.
//!
//! Owns: the wire format of replies and the fixed replies the server sends.
//! Must never: allocate per reply (fixed replies are `&'static str`, dynamic
//! parts are appended straight into the caller's buffer) or emit a CR/LF
//! inside a reply line (every dynamic part is checked by the caller's parser).

/// One reply line: `code SP status SP text CRLF`.
///
/// `status` is empty for the replies RFC 2034 exempts from enhanced codes
/// (intermediate 334/354 replies and the greeting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub status: &'static str,
    pub text: &'static str,
}

impl Reply {
    pub const fn new(code: u16, status: &'static str, text: &'static str) -> Self {
        Reply { code, status, text }
    }

    /// True for 4xx and 5xx replies.
    pub fn is_negative(&self) -> bool {
        self.code >= 400
    }

    /// Appends this reply as one CRLF-terminated line.
    pub fn write(&self, out: &mut Vec<u8>) {
        write_parts(out, self.code, self.status, &[self.text.as_bytes()]);
    }

    /// Appends this reply with `extra` after the fixed text (e.g. a queue id).
    pub fn write_with(&self, out: &mut Vec<u8>, extra: &[u8]) {
        write_parts(out, self.code, self.status, &[self.text.as_bytes(), extra]);
    }
}

/// Appends `code SP [status SP] parts... CRLF`.
pub fn write_parts(out: &mut Vec<u8>, code: u16, status: &str, parts: &[&[u8]]) {
    write_line(out, code, b' ', status, parts);
}

/// Appends one line of a reply; `sep` is `-` for continuation lines.
fn write_line(out: &mut Vec<u8>, code: u16, sep: u8, status: &str, parts: &[&[u8]]) {
    write_code(out, code);
    out.push(sep);
    if !status.is_empty() {
        out.extend_from_slice(status.as_bytes());
        out.push(b' ');
    }
    for part in parts {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b"\r\n");
}

fn write_code(out: &mut Vec<u8>, code: u16) {
    // Reply codes are always three digits; clamp keeps a bad constant visible
    // rather than producing a malformed line.
    let code = code.clamp(100, 599);
    out.push(b'0' + (code / 100) as u8);
    out.push(b'0' + (code / 10 % 10) as u8);
    out.push(b'0' + (code % 10) as u8);
}

/// What the EHLO reply advertises; everything else is fixed.
#[derive(Debug, Clone, Copy)]
pub struct EhloOptions<'a> {
    pub hostname: &'a str,
    pub max_message_size: u64,
    pub starttls: bool,
    pub auth: bool,
}

/// Appends the multi-line EHLO reply. RFC 2034 exempts it from enhanced codes.
pub fn write_ehlo(out: &mut Vec<u8>, opts: &EhloOptions<'_>) {
    let mut digits = [0u8; 20];
    let size = format_u64(opts.max_message_size, &mut digits);
    let word = |w: &'static [u8]| Some([w, b"".as_slice()]);
    let lines: [Option<[&[u8]; 2]>; 10] = [
        Some([opts.hostname.as_bytes(), b""]),
        word(b"PIPELINING"),
        Some([b"SIZE ", size]),
        word(b"8BITMIME"),
        word(b"SMTPUTF8"),
        word(b"ENHANCEDSTATUSCODES"),
        word(b"CHUNKING"),
        word(b"DSN"),
        if opts.starttls {
            word(b"STARTTLS")
        } else {
            None
        },
        if opts.auth {
            word(b"AUTH PLAIN LOGIN")
        } else {
            None
        },
    ];
    let n = lines.iter().flatten().count();
    for (i, parts) in lines.iter().flatten().enumerate() {
        let sep = if i + 1 == n { b' ' } else { b'-' };
        write_line(out, 250, sep, "", parts);
    }
}

/// Formats `v` in decimal into `buf`, returning the digits.
pub fn format_u64(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

// Fixed replies. Texts are what a human debugging a session needs to read.
pub const OK: Reply = Reply::new(250, "2.0.0", "Ok");
pub const SENDER_OK: Reply = Reply::new(250, "2.1.0", "Ok");
pub const RECIPIENT_OK: Reply = Reply::new(250, "2.1.5", "Ok");
pub const QUEUED: Reply = Reply::new(250, "2.0.0", "Ok: queued as ");
pub const CHUNK_OK: Reply = Reply::new(250, "2.0.0", "Ok: chunk received");
pub const START_DATA: Reply = Reply::new(354, "", "End data with <CR><LF>.<CR><LF>");
pub const VRFY: Reply = Reply::new(
    252,
    "2.5.0",
    "Cannot VRFY user, but will accept message and attempt delivery",
);
pub const HELP: Reply = Reply::new(214, "2.0.0", "See RFC 5321");
pub const READY_TLS: Reply = Reply::new(220, "2.0.0", "Ready to start TLS");
pub const BYE: Reply = Reply::new(221, "2.0.0", "Bye");
pub const AUTH_OK: Reply = Reply::new(235, "2.7.0", "Authentication successful");
pub const AUTH_CHALLENGE_EMPTY: Reply = Reply::new(334, "", "");
/// base64("Username:") and base64("Password:"), as every LOGIN client expects.
pub const AUTH_LOGIN_USER: Reply = Reply::new(334, "", "VXNlcm5hbWU6");
pub const AUTH_LOGIN_PASS: Reply = Reply::new(334, "", "UGFzc3dvcmQ6");

pub const SPOOL_ERROR: Reply = Reply::new(451, "4.3.0", "Error: queue file write error");
pub const NO_STORAGE: Reply = Reply::new(452, "4.3.1", "Insufficient system storage");
pub const UNKNOWN_POOL: Reply = Reply::new(
    550,
    "5.7.0",
    "The message names an IP pool this server does not have",
);
pub const TOO_MANY_RECIPIENTS: Reply = Reply::new(452, "4.5.3", "Too many recipients");
pub const TOO_MANY_ERRORS: Reply = Reply::new(421, "4.7.0", "Too many errors, closing connection");
pub const TIMEOUT: Reply = Reply::new(421, "4.4.2", "Error: timeout exceeded, closing connection");
pub const TOO_SLOW: Reply = Reply::new(
    421,
    "4.4.2",
    "Error: data rate below minimum, timeout, closing connection",
);

pub const BAD_SEQUENCE_HELO: Reply = Reply::new(503, "5.5.1", "Error: send HELO/EHLO first");
pub const BAD_SEQUENCE_NESTED_MAIL: Reply = Reply::new(503, "5.5.1", "Error: nested MAIL command");
pub const BAD_SEQUENCE_NEED_MAIL: Reply = Reply::new(503, "5.5.1", "Error: need MAIL command");
pub const BAD_SEQUENCE_NEED_RCPT: Reply = Reply::new(503, "5.5.1", "Error: need RCPT command");
pub const BAD_SEQUENCE_IN_TRANSACTION: Reply =
    Reply::new(503, "5.5.1", "Error: MAIL transaction in progress");
pub const BAD_SEQUENCE_BINARYMIME: Reply =
    Reply::new(503, "5.5.1", "Error: BODY=BINARYMIME requires BDAT");
pub const BAD_SEQUENCE_DATA_AFTER_BDAT: Reply =
    Reply::new(503, "5.5.1", "Error: DATA not allowed after BDAT");
pub const TLS_ACTIVE: Reply = Reply::new(503, "5.5.1", "Error: TLS already active");
pub const ALREADY_AUTHENTICATED: Reply = Reply::new(503, "5.5.1", "Error: already authenticated");
pub const TLS_UNAVAILABLE: Reply = Reply::new(502, "5.5.1", "Error: STARTTLS not available");
pub const AUTH_UNAVAILABLE: Reply = Reply::new(502, "5.5.1", "Error: authentication not enabled");
pub const AUTH_UNKNOWN_MECHANISM: Reply =
    Reply::new(504, "5.5.4", "Unrecognized authentication type");
pub const AUTH_CANCELLED: Reply = Reply::new(501, "5.0.0", "Authentication canceled");
pub const AUTH_BAD_RESPONSE: Reply = Reply::new(501, "5.5.2", "Cannot decode response");
pub const AUTH_FAILED: Reply = Reply::new(535, "5.7.8", "Authentication credentials invalid");
pub const AUTH_THROTTLED: Reply = Reply::new(
    454,
    "4.7.0",
    "Too many failed authentications, try again later",
);
pub const ENCRYPTION_REQUIRED: Reply = Reply::new(
    538,
    "5.7.11",
    "Encryption required for requested authentication mechanism",
);
pub const RELAY_DENIED: Reply = Reply::new(554, "5.7.1", "Relay access denied");
/// RFC 5321 4.5.1 asks every server to accept `<Postmaster>`; one whose
/// operator named no mailbox for it says so rather than accept mail it
/// could only bounce.
pub const NO_POSTMASTER: Reply = Reply::new(
    550,
    "5.1.1",
    "<postmaster> has no mailbox on this server: its operator must set [server] postmaster",
);
/// A recipient of a hosted domain that no user, alias or catch-all
/// takes, or a rewritten sender (`SRS0=`) that is not genuine or too old.
pub const UNKNOWN_USER: Reply = Reply::new(550, "5.1.1", "No such user here");
/// An alias that names itself through others (RFC 3463 5.4.6: routing
/// loop detected): known before any mail is taken.
pub const ALIAS_LOOP: Reply = Reply::new(550, "5.4.6", "Alias loop detected");
pub const ALIAS_TOO_DEEP: Reply = Reply::new(550, "5.4.6", "Alias expansion too deep or too large");
/// The LMTP server of the recipient's domain answered 4xx, or could not be
/// asked: 450 (RFC 5321: mailbox unavailable, try again) with 4.2.0 (RFC
/// 3463: a temporary mailbox condition), so the client retries later and
/// nothing is accepted that might have to bounce.
pub const VERIFY_UNAVAILABLE: Reply = Reply::new(
    450,
    "4.2.0",
    "Recipient cannot be verified now, try again later",
);
/// A recipient given twice in one transaction: accepted once.
pub const DUPLICATE_RECIPIENT: Reply =
    Reply::new(250, "2.1.5", "Ok (duplicate recipient, accepted once)");
pub const MESSAGE_TOO_BIG: Reply = Reply::new(
    552,
    "5.3.4",
    "Message size exceeds fixed maximum message size",
);
pub const TOO_MANY_CHUNKS: Reply = Reply::new(552, "5.3.4", "Too many BDAT chunks for one message");
pub const BARE_CR_LF: Reply = Reply::new(550, "5.5.2", "Message contains bare CR or LF");
pub const UTF8_NEEDS_SMTPUTF8: Reply =
    Reply::new(553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
pub const PARAMS_NEED_EHLO: Reply = Reply::new(555, "5.5.4", "Error: parameters require EHLO");

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn fixed_reply_line() {
        assert_eq!(text(|o| OK.write(o)), "250 2.0.0 Ok\r\n");
        assert_eq!(
            text(|o| START_DATA.write(o)),
            "354 End data with <CR><LF>.<CR><LF>\r\n"
        );
    }

    #[test]
    fn reply_with_extra() {
        assert_eq!(
            text(|o| QUEUED.write_with(o, b"ABC123")),
            "250 2.0.0 Ok: queued as ABC123\r\n"
        );
    }

    #[test]
    fn ehlo_without_tls_offers_starttls_not_auth() {
        let opts = EhloOptions {
            hostname: "mx.example",
            max_message_size: 1000,
            starttls: true,
            auth: false,
        };
        assert_eq!(
            text(|o| write_ehlo(o, &opts)),
            "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n\
             250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-DSN\r\n\
             250 STARTTLS\r\n"
        );
    }

    #[test]
    fn ehlo_last_line_has_space() {
        let opts = EhloOptions {
            hostname: "h",
            max_message_size: 0,
            starttls: false,
            auth: true,
        };
        let t = text(|o| write_ehlo(o, &opts));
        assert!(t.ends_with("250-DSN\r\n250 AUTH PLAIN LOGIN\r\n"));
        assert!(t.contains("250-SIZE 0\r\n"));
    }

    #[test]
    fn format_u64_edges() {
        let mut b = [0u8; 20];
        assert_eq!(format_u64(0, &mut b), b"0");
        assert_eq!(format_u64(u64::MAX, &mut b), b"18446744073709551615");
    }
}
