//! `[[domain]]` and `[aliases]`: the domains this server is the final
//! destination for, how their mail is delivered (into Maildirs, or to an
//! LMTP server), how their recipients are known, and the alias table with
//! the sender rewriting of forwards.
//!
//! This module owns those keys as the config gives them (names, paths,
//! choices). The users files and the alias file are read where they are
//! used (`hosted`), at start and at reload, with their own line numbers.

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;

use serde::{Serialize, Serializer};

use super::{DurationSetting, RelayHost};

/// The LMTP port (RFC 2033 names none; 24 is the registered one).
pub const LMTP_PORT: u16 = 24;
/// `maildir_mode` default: files readable and writable by their owner.
pub const DEFAULT_MAILDIR_MODE: u32 = 0o600;
/// `verify_cache` default.
pub const DEFAULT_VERIFY_CACHE_SECS: u64 = 60;

/// One `[[domain]]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DomainSection {
    /// The domain, lower case, without a trailing dot.
    pub name: String,
    pub delivery: LocalDelivery,
    /// Where `delivery = "lmtp"` hands mail; none for Maildir.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lmtp: Option<LmtpTarget>,
    /// The directory holding a Maildir per user (`<root>/<local part>/`);
    /// none for LMTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maildir_root: Option<PathBuf>,
    /// Permission bits of the files delivered; directories get the same
    /// with search (`x`) wherever read or write is given.
    #[serde(serialize_with = "mode_text")]
    pub maildir_mode: u32,
    /// `"user"` or `"user:group"` owning what is delivered; empty: the
    /// user petrel runs as.
    pub maildir_owner: String,
    /// How a recipient is known to exist, at RCPT.
    pub verify: Verify,
    /// For `verify = "users"`: a file of users (see `hosted::users`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users_file: Option<PathBuf>,
    /// For `verify = "users"`: users listed in the config.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Where mail for an unknown local part goes instead of being
    /// refused; none: refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_all: Option<String>,
    /// `user<delimiter>tag` is delivered to `user`; empty: no
    /// sub-addressing.
    pub recipient_delimiter: String,
    /// Local parts compare byte for byte instead of without regard to
    /// ASCII case.
    pub case_sensitive: bool,
    /// For `verify = "lmtp"`: how long an answer of the LMTP server is
    /// remembered.
    pub verify_cache: DurationSetting,
}

/// `delivery`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalDelivery {
    Maildir,
    Lmtp,
}

/// `verify`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    /// The domain's `users_file` and `users`.
    Users,
    /// Asking the LMTP server (`RCPT` in a transaction that sends no
    /// data), remembered for `verify_cache`.
    Lmtp,
    /// Every local part is accepted.
    None,
}

/// An LMTP server: a TCP address or a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LmtpTarget {
    Tcp(RelayHost),
    Unix(PathBuf),
}

/// `[aliases]`
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AliasesSection {
    /// The alias file (`address: target, target`); none: no aliases.
    #[serde(serialize_with = "super::path_or_empty")]
    pub file: Option<PathBuf>,
    /// The envelope sender of mail an alias forwards to another server.
    pub forward_sender: ForwardSender,
    /// The domain of rewritten senders: bounces of forwarded mail come
    /// back to it, so it must reach this server; none (printed as `""`):
    /// `[server] hostname`.
    #[serde(serialize_with = "super::text_or_empty")]
    pub srs_domain: Option<String>,
    /// The secret that signs rewritten senders, one line of at least 16
    /// bytes; none: `srs-secret` in the spool directory, made on first
    /// start.
    #[serde(serialize_with = "super::path_or_empty")]
    pub srs_secret_file: Option<PathBuf>,
}

/// `forward_sender`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardSender {
    /// The Sender Rewriting Scheme: `SRS0=hash=time=domain=local@srs_domain`,
    /// so the receiving server's SPF check sees this server's domain.
    #[default]
    Srs,
    /// The original sender, unchanged.
    Keep,
}

impl AliasesSection {
    /// Whether every key is at its default (then it is not printed, so
    /// a file without `[aliases]` prints as before).
    pub fn is_default(&self) -> bool {
        *self == AliasesSection::default()
    }

    /// The domain of rewritten senders.
    pub fn srs_domain<'a>(&'a self, hostname: &'a str) -> &'a str {
        self.srs_domain.as_deref().unwrap_or(hostname)
    }
}

impl DomainSection {
    /// Whether local parts `a` and `b` name the same user here.
    pub fn same_local_part(&self, a: &str, b: &str) -> bool {
        match self.case_sensitive {
            true => a == b,
            false => a.eq_ignore_ascii_case(b),
        }
    }

    /// The user a local part names: without its sub-address (from the
    /// first delimiter on, unless that leaves nothing) and, unless local
    /// parts are case-sensitive, in ASCII lower case.
    pub fn user_of<'a>(&self, local: &'a str) -> Cow<'a, str> {
        let cut = local
            .char_indices()
            .find(|&(i, c)| i > 0 && self.recipient_delimiter.contains(c))
            .map_or(local, |(i, _)| &local[..i]);
        match self.case_sensitive || !cut.bytes().any(|b| b.is_ascii_uppercase()) {
            true => Cow::Borrowed(cut),
            false => Cow::Owned(cut.to_ascii_lowercase()),
        }
    }
}

impl LmtpTarget {
    /// Reads `"unix:/path"`, `"host"`, `"host:port"` or `"[ipv6]:port"`
    /// (port 24 when none is given).
    pub fn parse(text: &str) -> Result<LmtpTarget, String> {
        match text.strip_prefix("unix:") {
            Some("") => Err("\"unix:\" needs the socket's path after it".to_owned()),
            Some(path) if !path.starts_with('/') => Err(format!(
                "the socket path {path:?} must be absolute (\"unix:/run/dovecot/lmtp\")"
            )),
            Some(path) => Ok(LmtpTarget::Unix(PathBuf::from(path))),
            None => RelayHost::parse(text, LMTP_PORT)
                .map(LmtpTarget::Tcp)
                .map_err(|e| e.to_string()),
        }
    }
}

impl fmt::Display for LmtpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LmtpTarget::Tcp(host) => host.fmt(f),
            LmtpTarget::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Serialize for LmtpTarget {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

fn mode_text<S: Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{mode:04o}"))
}
