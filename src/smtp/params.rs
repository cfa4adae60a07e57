//! ESMTP parameters of MAIL (SIZE, BODY, SMTPUTF8, RET, ENVID, AUTH) and
//! RCPT (NOTIFY, ORCPT): RFC 1870, 6152, 3030, 6531, 3461, 4954.
//!
//! Owns: recognising and validating `keyword[=value]` parameters.
//! Must never: allocate (values are slices of the command line) or accept
//! a keyword we do not implement (unknown ones are 555 5.5.4).

use super::xtext::{check_xtext, is_xtext};

/// Why a parameter list was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("unsupported parameter")]
    Unknown,
    #[error("malformed parameter value")]
    Malformed,
    #[error("parameter given twice")]
    Duplicate,
}

/// `BODY=` (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Body {
    #[default]
    SevenBit,
    EightBitMime,
    BinaryMime,
}

/// `RET=` (RFC 3461 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Headers,
}

/// `NOTIFY=` as a bit set (RFC 3461 4.1). `NEVER` is the empty set with
/// `given` true; an absent parameter is `None` at the call site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Notify(pub u8);

impl Notify {
    pub const NEVER: Notify = Notify(0);
    pub const SUCCESS: u8 = 1;
    pub const FAILURE: u8 = 2;
    pub const DELAY: u8 = 4;

    pub fn success(self) -> bool {
        self.0 & Self::SUCCESS != 0
    }
    pub fn failure(self) -> bool {
        self.0 & Self::FAILURE != 0
    }
    pub fn delay(self) -> bool {
        self.0 & Self::DELAY != 0
    }
    pub fn never(self) -> bool {
        self.0 == 0
    }
}

/// Parameters of one MAIL command, borrowed from the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailParams<'a> {
    pub size: Option<u64>,
    pub body: Option<Body>,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    /// Still xtext-encoded, as the DSN must echo it.
    pub envid: Option<&'a [u8]>,
    /// True when any parameter at all was given (HELO sessions refuse them).
    pub any: bool,
}

/// Parameters of one RCPT command, borrowed from the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RcptParams<'a> {
    pub notify: Option<Notify>,
    /// `addr-type ";" xtext`, still encoded.
    pub orcpt: Option<&'a [u8]>,
    pub any: bool,
}

/// RFC 3461 4.4: ENVID is at most 100 characters.
const MAX_ENVID: usize = 100;
/// RFC 1870 allows 20 digits.
const MAX_SIZE_DIGITS: usize = 20;

/// Splits `input` on spaces into `(keyword, value)` pairs.
fn each_param<'a>(
    input: &'a [u8],
    mut f: impl FnMut(&'a [u8], Option<&'a [u8]>) -> Result<(), ParamError>,
) -> Result<(), ParamError> {
    for item in input.split(|&b| b == b' ').filter(|s| !s.is_empty()) {
        match memchr::memchr(b'=', item) {
            Some(eq) => f(&item[..eq], Some(&item[eq + 1..]))?,
            None => f(item, None)?,
        }
    }
    Ok(())
}

fn set_once<T>(slot: &mut Option<T>, v: T) -> Result<(), ParamError> {
    if slot.is_some() {
        return Err(ParamError::Duplicate);
    }
    *slot = Some(v);
    Ok(())
}

/// Parses the parameters after `MAIL FROM:<path>`.
pub fn parse_mail_params(input: &[u8]) -> Result<MailParams<'_>, ParamError> {
    let mut p = MailParams::default();
    let mut auth_seen = false;
    each_param(input, |key, value| {
        p.any = true;
        match (upper(key), value) {
            (Key::Size, Some(v)) => set_once(&mut p.size, parse_size(v)?),
            (Key::Body, Some(v)) => set_once(&mut p.body, parse_body(v)?),
            (Key::Smtputf8, None) if !p.smtputf8 => {
                p.smtputf8 = true;
                Ok(())
            }
            (Key::Smtputf8, None) => Err(ParamError::Duplicate),
            (Key::Ret, Some(v)) => set_once(&mut p.ret, parse_ret(v)?),
            (Key::Envid, Some(v)) if v.len() <= MAX_ENVID && is_xtext(v) => {
                set_once(&mut p.envid, v)
            }
            // RFC 4954 5: accepted and ignored; we never relay an AUTH identity.
            (Key::Auth, Some(v)) if !auth_seen && (v == b"<>" || is_xtext(v)) => {
                auth_seen = true;
                Ok(())
            }
            (Key::Auth, Some(_)) if auth_seen => Err(ParamError::Duplicate),
            (Key::Notify | Key::Orcpt | Key::Other, _) => Err(ParamError::Unknown),
            _ => Err(ParamError::Malformed),
        }
    })?;
    Ok(p)
}

/// Parses the parameters after `RCPT TO:<path>`.
pub fn parse_rcpt_params(input: &[u8]) -> Result<RcptParams<'_>, ParamError> {
    let mut p = RcptParams::default();
    each_param(input, |key, value| {
        p.any = true;
        match (upper(key), value) {
            (Key::Notify, Some(v)) => set_once(&mut p.notify, parse_notify(v)?),
            (Key::Orcpt, Some(v)) if is_orcpt(v) => set_once(&mut p.orcpt, v),
            (Key::Notify | Key::Orcpt, _) => Err(ParamError::Malformed),
            _ => Err(ParamError::Unknown),
        }
    })?;
    Ok(p)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Size,
    Body,
    Smtputf8,
    Ret,
    Envid,
    Auth,
    Notify,
    Orcpt,
    Other,
}

fn upper(key: &[u8]) -> Key {
    const KEYS: [(&[u8], Key); 8] = [
        (b"SIZE", Key::Size),
        (b"BODY", Key::Body),
        (b"SMTPUTF8", Key::Smtputf8),
        (b"RET", Key::Ret),
        (b"ENVID", Key::Envid),
        (b"AUTH", Key::Auth),
        (b"NOTIFY", Key::Notify),
        (b"ORCPT", Key::Orcpt),
    ];
    KEYS.iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(key))
        .map_or(Key::Other, |&(_, k)| k)
}

/// A declared size too large for u64 saturates: it is over any limit anyway.
fn parse_size(v: &[u8]) -> Result<u64, ParamError> {
    if v.is_empty() || v.len() > MAX_SIZE_DIGITS || !v.iter().all(u8::is_ascii_digit) {
        return Err(ParamError::Malformed);
    }
    Ok(v.iter().fold(0u64, |acc, &d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

fn parse_body(v: &[u8]) -> Result<Body, ParamError> {
    if v.eq_ignore_ascii_case(b"7BIT") {
        Ok(Body::SevenBit)
    } else if v.eq_ignore_ascii_case(b"8BITMIME") {
        Ok(Body::EightBitMime)
    } else if v.eq_ignore_ascii_case(b"BINARYMIME") {
        Ok(Body::BinaryMime)
    } else {
        Err(ParamError::Malformed)
    }
}

fn parse_ret(v: &[u8]) -> Result<Ret, ParamError> {
    if v.eq_ignore_ascii_case(b"FULL") {
        Ok(Ret::Full)
    } else if v.eq_ignore_ascii_case(b"HDRS") {
        Ok(Ret::Headers)
    } else {
        Err(ParamError::Malformed)
    }
}

/// `NEVER` alone, or a comma list of SUCCESS, FAILURE, DELAY.
fn parse_notify(v: &[u8]) -> Result<Notify, ParamError> {
    if v.eq_ignore_ascii_case(b"NEVER") {
        return Ok(Notify::NEVER);
    }
    let mut bits = 0u8;
    for word in v.split(|&b| b == b',') {
        let bit = if word.eq_ignore_ascii_case(b"SUCCESS") {
            Notify::SUCCESS
        } else if word.eq_ignore_ascii_case(b"FAILURE") {
            Notify::FAILURE
        } else if word.eq_ignore_ascii_case(b"DELAY") {
            Notify::DELAY
        } else {
            return Err(ParamError::Malformed);
        };
        if bits & bit != 0 {
            return Err(ParamError::Malformed);
        }
        bits |= bit;
    }
    Ok(Notify(bits))
}

/// `addr-type ";" xtext` (RFC 3461 4.2). UTF-8 octets are tolerated for
/// the `utf-8` address type of RFC 6533.
fn is_orcpt(v: &[u8]) -> bool {
    let Some(semi) = memchr::memchr(b';', v) else {
        return false;
    };
    let (kind, addr) = (&v[..semi], &v[semi + 1..]);
    let atom_ok = !kind.is_empty()
        && kind
            .iter()
            .all(|&b| super::address::is_atext(b) && b < 0x80);
    atom_ok && !addr.is_empty() && check_xtext(addr, true).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_params_all() {
        let p =
            parse_mail_params(b" SIZE=1000 BODY=8bitmime SMTPUTF8 RET=HDRS ENVID=abc+2Bd AUTH=<>")
                .unwrap();
        assert_eq!(p.size, Some(1000));
        assert_eq!(p.body, Some(Body::EightBitMime));
        assert!(p.smtputf8 && p.any);
        assert_eq!(p.ret, Some(Ret::Headers));
        assert_eq!(p.envid, Some(&b"abc+2Bd"[..]));
    }

    #[test]
    fn mail_params_empty() {
        let p = parse_mail_params(b"").unwrap();
        assert!(!p.any && p.size.is_none());
    }

    #[test]
    fn mail_param_errors() {
        use ParamError::*;
        for (input, err) in [
            (&b"FOO=1"[..], Unknown),
            (b"SIZE=", Malformed),
            (b"SIZE=12x", Malformed),
            (b"SIZE", Malformed),
            (b"SIZE=1 SIZE=2", Duplicate),
            (b"BODY=9BIT", Malformed),
            (b"SMTPUTF8=yes", Malformed),
            (b"SMTPUTF8 SMTPUTF8", Duplicate),
            (b"RET=ALL", Malformed),
            (b"ENVID=a=b", Malformed),
            (b"ENVID=a+zz", Malformed),
            (b"NOTIFY=NEVER", Unknown),
        ] {
            assert_eq!(parse_mail_params(input), Err(err), "{input:?}");
        }
        let long = format!("ENVID={}", "x".repeat(101));
        assert_eq!(parse_mail_params(long.as_bytes()), Err(Malformed));
    }

    #[test]
    fn huge_size_saturates() {
        let p = parse_mail_params(b"SIZE=99999999999999999999").unwrap();
        assert_eq!(p.size, Some(u64::MAX));
        assert_eq!(
            parse_mail_params(b"SIZE=999999999999999999999"),
            Err(ParamError::Malformed)
        );
    }

    #[test]
    fn rcpt_params() {
        let p = parse_rcpt_params(b"NOTIFY=SUCCESS,DELAY ORCPT=rfc822;a+40b").unwrap();
        let n = p.notify.unwrap();
        assert!(n.success() && n.delay() && !n.failure() && !n.never());
        assert_eq!(p.orcpt, Some(&b"rfc822;a+40b"[..]));
        assert!(parse_rcpt_params(b"NOTIFY=never")
            .unwrap()
            .notify
            .unwrap()
            .never());
    }

    #[test]
    fn rcpt_param_errors() {
        use ParamError::*;
        for (input, err) in [
            (&b"NOTIFY=NEVER,SUCCESS"[..], Malformed),
            (b"NOTIFY=SUCCESS,SUCCESS", Malformed),
            (b"NOTIFY=", Malformed),
            (b"ORCPT=rfc822", Malformed),
            (b"ORCPT=;a", Malformed),
            (b"ORCPT=rfc822;", Malformed),
            (b"SIZE=1", Unknown),
            (b"NOTIFY=DELAY NOTIFY=DELAY", Duplicate),
        ] {
            assert_eq!(parse_rcpt_params(input), Err(err), "{input:?}");
        }
    }
}
