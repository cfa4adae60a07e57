//! Command-line framing and parsing for the SMTP server (RFC 5321 4.1).
//!
//! Owns: finding one CRLF-terminated line in the receive buffer, the line
//! length limits, and turning a line into a borrowed [`Command`].
//! Must never: allocate, accept a line ended by anything but CRLF, or accept
//! a bare CR, bare LF or NUL inside a line (those are how smuggling starts).

use super::address::{self, AddressError, Mailbox, ReversePath};
use super::params::{self, MailParams, ParamError, RcptParams};
use super::reply::Reply;

/// RFC 5321 4.5.3.1.4: a command line is at most 512 octets with CRLF.
pub const MAX_COMMAND_LINE: usize = 512;
/// MAIL may grow by 100 for DSN (RFC 3461 5), plus the SIZE, BODY,
/// SMTPUTF8 and AUTH=<> parameters we accept (26 + 16 + 9 + 8).
pub const MAX_MAIL_LINE: usize = MAX_COMMAND_LINE + 100 + 59;
/// RCPT may grow by 500 for DSN NOTIFY/ORCPT (RFC 3461 5).
pub const MAX_RCPT_LINE: usize = MAX_COMMAND_LINE + 500;
/// RFC 4954 4: AUTH lines and SASL responses may be 12288 octets.
pub const MAX_AUTH_LINE: usize = 12288;

/// The verbs we know, used for limits and for syntax-error texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Ehlo,
    Helo,
    Mail,
    Rcpt,
    Data,
    Bdat,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    StartTls,
    Auth,
}

/// A SASL mechanism named in AUTH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMechanism {
    Plain,
    Login,
    Other,
}

/// One parsed command, borrowing from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    Ehlo {
        domain: &'a [u8],
    },
    Helo {
        domain: &'a [u8],
    },
    Mail {
        reverse_path: ReversePath<'a>,
        params: MailParams<'a>,
    },
    Rcpt {
        forward_path: Mailbox<'a>,
        params: RcptParams<'a>,
    },
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    StartTls,
    Auth {
        mechanism: AuthMechanism,
        initial: Option<&'a [u8]>,
    },
}

/// Why a command line was refused. Grouped by what the client did wrong;
/// every variant maps to one reply via `From<ParseError> for Reply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("line too long")]
    LineTooLong,
    #[error("bare CR, bare LF or NUL in command")]
    BadCharacter,
    #[error("unknown command")]
    UnknownCommand,
    #[error("syntax error in {0:?}")]
    Syntax(Verb),
    #[error("bad sender address: {0}")]
    BadSender(AddressError),
    #[error("bad recipient address: {0}")]
    BadRecipient(AddressError),
    #[error("unsupported parameter")]
    UnknownParameter,
    #[error("bad parameter in {0:?}")]
    BadParameter(Verb),
}

impl From<ParseError> for Reply {
    fn from(e: ParseError) -> Reply {
        match e {
            ParseError::LineTooLong => Reply::new(500, "5.5.2", "Error: line too long"),
            ParseError::BadCharacter => {
                Reply::new(500, "5.5.2", "Error: bare CR, LF or NUL in command")
            }
            ParseError::UnknownCommand => Reply::new(500, "5.5.2", "Error: command not recognized"),
            ParseError::Syntax(v) => Reply::new(501, "5.5.4", syntax_text(v)),
            ParseError::BadSender(a) => address_reply(a, "5.1.7", "Bad sender address syntax"),
            ParseError::BadRecipient(a) => {
                address_reply(a, "5.1.3", "Bad recipient address syntax")
            }
            ParseError::UnknownParameter => Reply::new(555, "5.5.4", "Unsupported parameter"),
            ParseError::BadParameter(v) => Reply::new(501, "5.5.4", syntax_text(v)),
        }
    }
}

fn address_reply(e: AddressError, status: &'static str, malformed: &'static str) -> Reply {
    let text = match e {
        AddressError::Malformed | AddressError::NullNotAllowed => malformed,
        AddressError::LocalPartTooLong => "Local part too long",
        AddressError::DomainTooLong => "Domain too long",
        AddressError::PathTooLong => "Path too long",
    };
    Reply::new(501, status, text)
}

/// The grammar a client should have used, so a human reading a transcript
/// can fix the client.
fn syntax_text(v: Verb) -> &'static str {
    match v {
        Verb::Ehlo => "Syntax: EHLO hostname",
        Verb::Helo => "Syntax: HELO hostname",
        Verb::Mail => "Syntax: MAIL FROM:<address> [parameters]",
        Verb::Rcpt => "Syntax: RCPT TO:<address> [parameters]",
        Verb::Data => "Syntax: DATA",
        Verb::Bdat => "Syntax: BDAT chunk-size [LAST]",
        Verb::Rset => "Syntax: RSET",
        Verb::Noop => "Syntax: NOOP [string]",
        Verb::Quit => "Syntax: QUIT",
        Verb::Vrfy => "Syntax: VRFY address",
        Verb::Help => "Syntax: HELP [string]",
        Verb::StartTls => "Syntax: STARTTLS",
        Verb::Auth => "Syntax: AUTH mechanism [initial-response]",
    }
}

/// Result of looking for one line in the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// A full line: its content without CRLF, and its length with CRLF.
    Complete { content: &'a [u8], len: usize },
    /// No CRLF yet; read more.
    Incomplete,
    /// No CRLF within the limit for this verb: discard up to the next CRLF.
    TooLong,
}

/// Packs up to the first 8 bytes, upper-cased, into an integer so verbs
/// compare with one instruction instead of a string compare.
const fn pack(s: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    while i < s.len() && i < 8 {
        v = (v << 8) | s[i].to_ascii_uppercase() as u64;
        i += 1;
    }
    v
}

const VERBS: [(u64, Verb); 13] = [
    (pack(b"EHLO"), Verb::Ehlo),
    (pack(b"HELO"), Verb::Helo),
    (pack(b"MAIL"), Verb::Mail),
    (pack(b"RCPT"), Verb::Rcpt),
    (pack(b"DATA"), Verb::Data),
    (pack(b"BDAT"), Verb::Bdat),
    (pack(b"RSET"), Verb::Rset),
    (pack(b"NOOP"), Verb::Noop),
    (pack(b"QUIT"), Verb::Quit),
    (pack(b"VRFY"), Verb::Vrfy),
    (pack(b"HELP"), Verb::Help),
    (pack(b"STARTTLS"), Verb::StartTls),
    (pack(b"AUTH"), Verb::Auth),
];

fn verb_of(word: &[u8]) -> Option<Verb> {
    if word.len() > 8 {
        return None;
    }
    let key = pack(word);
    VERBS.iter().find(|(k, _)| *k == key).map(|&(_, v)| v)
}

/// The longest line allowed for whatever verb `start` begins with. Used
/// before the line is complete, so only the first four octets count.
pub fn line_limit(start: &[u8]) -> usize {
    match start.get(..4).and_then(verb_of) {
        Some(Verb::Mail) => MAX_MAIL_LINE,
        Some(Verb::Rcpt) => MAX_RCPT_LINE,
        Some(Verb::Auth) => MAX_AUTH_LINE,
        _ => MAX_COMMAND_LINE,
    }
}

/// Finds the first CRLF-terminated line within `max` octets. A LF not
/// preceded by CR does not end a line; it stays inside and is refused later.
pub fn next_line(buf: &[u8], max: usize) -> Line<'_> {
    let window = &buf[..buf.len().min(max)];
    for lf in memchr::memchr_iter(b'\n', window) {
        if lf > 0 && window[lf - 1] == b'\r' {
            return Line::Complete {
                content: &window[..lf - 1],
                len: lf + 1,
            };
        }
    }
    if buf.len() >= max {
        Line::TooLong
    } else {
        Line::Incomplete
    }
}

/// Parses one command line (without its CRLF).
pub fn parse_command(line: &[u8]) -> Result<Command<'_>, ParseError> {
    if memchr::memchr3(b'\r', b'\n', 0, line).is_some() {
        return Err(ParseError::BadCharacter);
    }
    let line = trim_end(line);
    let (word, rest) = match memchr::memchr(b' ', line) {
        Some(sp) => (&line[..sp], &line[sp + 1..]),
        None => (line, &line[line.len()..]),
    };
    let verb = verb_of(word).ok_or(ParseError::UnknownCommand)?;
    let limit = match verb {
        Verb::Mail => MAX_MAIL_LINE,
        Verb::Rcpt => MAX_RCPT_LINE,
        Verb::Auth => MAX_AUTH_LINE,
        _ => MAX_COMMAND_LINE,
    };
    // `line` excludes CRLF; the limits include it.
    if line.len() + 2 > limit {
        return Err(ParseError::LineTooLong);
    }
    parse_args(verb, rest)
}

fn parse_args(verb: Verb, rest: &[u8]) -> Result<Command<'_>, ParseError> {
    let syntax = Err(ParseError::Syntax(verb));
    let no_args = |cmd: Command<'static>| if rest.is_empty() { Ok(cmd) } else { syntax };
    match verb {
        Verb::Ehlo => hostname(rest, verb).map(|domain| Command::Ehlo { domain }),
        Verb::Helo => hostname(rest, verb).map(|domain| Command::Helo { domain }),
        Verb::Mail => parse_mail(rest),
        Verb::Rcpt => parse_rcpt(rest),
        Verb::Data => no_args(Command::Data),
        Verb::Bdat => parse_bdat(rest),
        Verb::Rset => no_args(Command::Rset),
        Verb::Quit => no_args(Command::Quit),
        Verb::StartTls => no_args(Command::StartTls),
        Verb::Noop => Ok(Command::Noop),
        Verb::Help => Ok(Command::Help),
        Verb::Vrfy if rest.is_empty() => syntax,
        Verb::Vrfy => Ok(Command::Vrfy),
        Verb::Auth => parse_auth(rest),
    }
}

/// Trailing spaces are common from real clients and never ambiguous.
fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [head @ .., b' ' | b'\t'] = s {
        s = head;
    }
    s
}

/// EHLO/HELO argument: one token of visible octets. Host names are not
/// validated further: many real clients send underscores or bare names,
/// and the name is only recorded, never trusted.
fn hostname(rest: &[u8], verb: Verb) -> Result<&[u8], ParseError> {
    let visible = |b: &u8| *b > b' ' && *b != 0x7f;
    if rest.is_empty() || !rest.iter().all(visible) {
        return Err(ParseError::Syntax(verb));
    }
    Ok(rest)
}

/// Strips a case-insensitive `prefix`, then one optional space: `MAIL FROM: <a>`
/// is a common client error with no ambiguity, so it is tolerated.
fn strip_keyword<'a>(rest: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = rest.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let after = &rest[prefix.len()..];
    Some(after.strip_prefix(b" ").unwrap_or(after))
}

/// Parameters must be separated from the path by a space.
fn params_part(after_path: &[u8], verb: Verb) -> Result<&[u8], ParseError> {
    match after_path.first() {
        None => Ok(after_path),
        Some(b' ') => Ok(&after_path[1..]),
        Some(_) => Err(ParseError::Syntax(verb)),
    }
}

fn param_error(e: ParamError, verb: Verb) -> ParseError {
    match e {
        ParamError::Unknown => ParseError::UnknownParameter,
        ParamError::Malformed | ParamError::Duplicate => ParseError::BadParameter(verb),
    }
}

fn parse_mail(rest: &[u8]) -> Result<Command<'_>, ParseError> {
    let path = strip_keyword(rest, b"FROM:").ok_or(ParseError::Syntax(Verb::Mail))?;
    if path.first() != Some(&b'<') {
        return Err(ParseError::Syntax(Verb::Mail));
    }
    let (reverse_path, after) =
        address::parse_path(path, true, false).map_err(ParseError::BadSender)?;
    let tail = params_part(after, Verb::Mail)?;
    let params = params::parse_mail_params(tail).map_err(|e| param_error(e, Verb::Mail))?;
    Ok(Command::Mail {
        reverse_path,
        params,
    })
}

fn parse_rcpt(rest: &[u8]) -> Result<Command<'_>, ParseError> {
    let path = strip_keyword(rest, b"TO:").ok_or(ParseError::Syntax(Verb::Rcpt))?;
    if path.first() != Some(&b'<') {
        return Err(ParseError::Syntax(Verb::Rcpt));
    }
    let (forward_path, after) =
        address::parse_path(path, false, true).map_err(ParseError::BadRecipient)?;
    let ReversePath::Mailbox(forward_path) = forward_path else {
        return Err(ParseError::BadRecipient(AddressError::NullNotAllowed));
    };
    let tail = params_part(after, Verb::Rcpt)?;
    let params = params::parse_rcpt_params(tail).map_err(|e| param_error(e, Verb::Rcpt))?;
    Ok(Command::Rcpt {
        forward_path,
        params,
    })
}

/// `BDAT SP chunk-size [SP "LAST"]`, chunk-size is 1*DIGIT.
fn parse_bdat(rest: &[u8]) -> Result<Command<'_>, ParseError> {
    let err = ParseError::Syntax(Verb::Bdat);
    let (num, last) = match memchr::memchr(b' ', rest) {
        Some(sp) if rest[sp + 1..].eq_ignore_ascii_case(b"LAST") => (&rest[..sp], true),
        Some(_) => return Err(err),
        None => (rest, false),
    };
    if num.is_empty() || num.len() > 19 || !num.iter().all(u8::is_ascii_digit) {
        return Err(err);
    }
    let size = num
        .iter()
        .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
    Ok(Command::Bdat { size, last })
}

/// `AUTH SP mechanism [SP initial-response]`.
fn parse_auth(rest: &[u8]) -> Result<Command<'_>, ParseError> {
    let (mech, initial) = match memchr::memchr(b' ', rest) {
        Some(sp) => (&rest[..sp], Some(&rest[sp + 1..])),
        None => (rest, None),
    };
    if mech.is_empty() || initial.is_some_and(|i| i.is_empty() || i.contains(&b' ')) {
        return Err(ParseError::Syntax(Verb::Auth));
    }
    let mechanism = if mech.eq_ignore_ascii_case(b"PLAIN") {
        AuthMechanism::Plain
    } else if mech.eq_ignore_ascii_case(b"LOGIN") {
        AuthMechanism::Login
    } else {
        AuthMechanism::Other
    };
    Ok(Command::Auth { mechanism, initial })
}

#[cfg(test)]
mod tests;
