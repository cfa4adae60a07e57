//! `[[domain]]` and `[aliases]` as written, and their checks: each domain
//! once, never also a route's, with what its delivery needs and a way to
//! know its users; each error at the value it is about.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::domain::{
    AliasesSection, DomainSection, ForwardSender, LmtpTarget, LocalDelivery, Verify,
    DEFAULT_MAILDIR_MODE, DEFAULT_VERIFY_CACHE_SECS,
};
use super::raw::{check_mailbox, error_at, optional, parsed, valid};
use super::route::is_domain_name;
use super::{DurationSetting, Located, RouteDomain, RouteSection};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDomain {
    name: Spanned<String>,
    delivery: Spanned<String>,
    lmtp: Option<Spanned<String>>,
    maildir_root: Option<Spanned<PathBuf>>,
    maildir_mode: Option<Spanned<String>>,
    maildir_owner: Option<Spanned<String>>,
    verify: Option<Spanned<String>>,
    users_file: Option<Spanned<PathBuf>>,
    users: Option<Vec<Spanned<String>>>,
    catch_all: Option<Spanned<String>>,
    recipient_delimiter: Option<Spanned<String>>,
    case_sensitive: Option<bool>,
    verify_cache: Option<Spanned<DurationSetting>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAliases {
    file: Option<Spanned<PathBuf>>,
    forward_sender: Option<Spanned<String>>,
    srs_domain: Option<Spanned<String>>,
    srs_secret_file: Option<Spanned<PathBuf>>,
}

/// The `[[domain]]` entries in file order: none twice, none that a
/// `[[route]]` sends elsewhere.
pub(super) fn domains(
    raws: Vec<RawDomain>,
    routes: &[RouteSection],
) -> Result<Vec<DomainSection>, Located> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raws.len());
    for raw in raws {
        let span = raw.name.span();
        let section = raw.into_section()?;
        if !seen.insert(section.name.clone()) {
            return error_at(
                span,
                format!(
                    "domain {:?} is already hosted by an earlier [[domain]]",
                    section.name
                ),
            );
        }
        // A catch-all route ("*") is how mail for every other domain
        // leaves; hosted domains come before it.
        if let Some(route) = routes
            .iter()
            .find(|r| r.domain != RouteDomain::Any && r.domain.matches(&section.name))
        {
            return error_at(
                span,
                format!(
                    "domain {:?} is hosted here, but the [[route]] for {:?} sends its mail to {}: remove one of them",
                    section.name, route.domain.to_string(), route.relay
                ),
            );
        }
        out.push(section);
    }
    Ok(out)
}

impl RawDomain {
    fn into_section(self) -> Result<DomainSection, Located> {
        let name = valid(self.name, |n| {
            match is_domain_name(n.trim_end_matches('.')) {
                true => Ok(()),
                false => Err(format!("domain name {n:?} is not a domain name")),
            }
        })?;
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let delivery_span = self.delivery.span();
        let delivery = parsed(&self.delivery, |d| match d {
            "maildir" => Ok(LocalDelivery::Maildir),
            "lmtp" => Ok(LocalDelivery::Lmtp),
            other => Err(format!(
                "delivery {other:?} is not known: \"maildir\" or \"lmtp\""
            )),
        })?;
        let lmtp = self
            .lmtp
            .as_ref()
            .map(|t| parsed(t, LmtpTarget::parse))
            .transpose()?;
        let maildir_root = optional(self.maildir_root, |p| match p.as_os_str().is_empty() {
            true => Err("maildir_root is empty: give the directory".to_owned()),
            false => Ok(()),
        })?;
        match (delivery, &lmtp, &maildir_root) {
            (LocalDelivery::Lmtp, None, _) => {
                return error_at(
                    delivery_span,
                    "delivery = \"lmtp\" needs lmtp = \"unix:/path\" or \"host:port\"".to_owned(),
                )
            }
            (LocalDelivery::Maildir, _, None) => return error_at(
                delivery_span,
                "delivery = \"maildir\" needs maildir_root, the directory of the users' Maildirs"
                    .to_owned(),
            ),
            _ => {}
        }
        let users = self
            .users
            .unwrap_or_default()
            .into_iter()
            .map(|u| valid(u, check_user))
            .collect::<Result<Vec<_>, _>>()?;
        let verify = match &self.verify {
            Some(text) => parsed(text, |v| match v {
                "users" => Ok(Verify::Users),
                "lmtp" => Ok(Verify::Lmtp),
                "none" => Ok(Verify::None),
                other => Err(format!(
                    "verify {other:?} is not known: \"users\", \"lmtp\" or \"none\""
                )),
            })?,
            None if self.users_file.is_some() || !users.is_empty() => Verify::Users,
            None if delivery == LocalDelivery::Lmtp => Verify::Lmtp,
            None => {
                return error_at(delivery_span, "a Maildir domain needs its users: users_file, users, or verify = \"none\" to accept every local part".to_owned())
            }
        };
        let at = self.verify.as_ref().map_or(delivery_span, |v| v.span());
        match verify {
            Verify::Users if self.users_file.is_none() && users.is_empty() => {
                return error_at(
                    at,
                    "verify = \"users\" needs users_file or users".to_owned(),
                )
            }
            Verify::Lmtp if delivery != LocalDelivery::Lmtp => return error_at(
                at,
                "verify = \"lmtp\" asks the domain's LMTP server, so it needs delivery = \"lmtp\""
                    .to_owned(),
            ),
            _ => {}
        }
        Ok(DomainSection {
            maildir_mode: match &self.maildir_mode {
                Some(text) => parsed(text, parse_mode)?,
                None => DEFAULT_MAILDIR_MODE,
            },
            maildir_owner: optional(self.maildir_owner, check_owner)?.unwrap_or_default(),
            users_file: optional(self.users_file, |p| match p.as_os_str().is_empty() {
                true => Err("users_file is empty: give a path".to_owned()),
                false => Ok(()),
            })?,
            catch_all: optional(self.catch_all, |a| match a.is_empty() {
                true => Err("catch_all is empty: give an address or leave it out".to_owned()),
                false => check_mailbox("catch_all", a),
            })?,
            recipient_delimiter: optional(self.recipient_delimiter, check_delimiter)?
                .unwrap_or_else(|| "+".to_owned()),
            case_sensitive: self.case_sensitive.unwrap_or(false),
            verify_cache: optional(self.verify_cache, |_| Ok(()))?.unwrap_or(DurationSetting(
                Duration::from_secs(DEFAULT_VERIFY_CACHE_SECS),
            )),
            name,
            delivery,
            lmtp,
            maildir_root,
            verify,
            users,
        })
    }
}

impl RawAliases {
    pub(super) fn into_section(self) -> Result<AliasesSection, Located> {
        let forward_sender = match &self.forward_sender {
            Some(text) => parsed(text, |s| match s {
                "srs" => Ok(ForwardSender::Srs),
                "keep" => Ok(ForwardSender::Keep),
                other => Err(format!(
                    "forward_sender {other:?} is not known: \"srs\" or \"keep\""
                )),
            })?,
            None => ForwardSender::default(),
        };
        let srs_domain = optional(self.srs_domain, |n| {
            match n.is_empty() || is_domain_name(n) {
                true => Ok(()),
                false => Err(format!("srs_domain {n:?} is not a domain name")),
            }
        })?;
        Ok(AliasesSection {
            file: non_empty(self.file),
            forward_sender,
            srs_domain: srs_domain
                .filter(|n| !n.is_empty())
                .map(|n| n.to_ascii_lowercase()),
            srs_secret_file: non_empty(self.srs_secret_file),
        })
    }
}

/// A path, `""` meaning none.
fn non_empty(path: Option<Spanned<PathBuf>>) -> Option<PathBuf> {
    path.map(Spanned::into_inner)
        .filter(|p| !p.as_os_str().is_empty())
}

/// A user as `users` lists it: a local part (no `@`, no spaces).
fn check_user(user: &String) -> Result<(), String> {
    match !user.is_empty() && !user.contains('@') && !user.chars().any(char::is_whitespace) {
        true => Ok(()),
        false => Err(format!(
            "user {user:?} is not a local part (the part before the @, without spaces)"
        )),
    }
}

/// `"0600"`-style permission bits: octal, file permissions only.
fn parse_mode(text: &str) -> Result<u32, String> {
    match u32::from_str_radix(text, 8) {
        Ok(mode) if mode <= 0o777 && mode & 0o600 == 0o600 => Ok(mode),
        Ok(mode) if mode <= 0o777 => Err(format!(
            "maildir_mode {text:?} does not let the owner read and write ({mode:04o}): petrel and the mailbox server need both"
        )),
        _ => Err(format!(
            "maildir_mode {text:?} is not a permission mode such as \"0600\" or \"0660\""
        )),
    }
}

/// `"user"` or `"user:group"`, names or numbers.
fn check_owner(owner: &String) -> Result<(), String> {
    let valid = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.$".contains(&b))
    };
    let ok = match owner.split_once(':') {
        Some((user, group)) => valid(user) && valid(group),
        None => owner.is_empty() || valid(owner),
    };
    match ok {
        true => Ok(()),
        false => Err(format!(
            "maildir_owner {owner:?} is not \"user\" or \"user:group\""
        )),
    }
}

/// One or more characters that cannot start or be a local part's
/// structure: not `@`, a space, `"` or a dot.
fn check_delimiter(delimiter: &String) -> Result<(), String> {
    match delimiter
        .chars()
        .all(|c| !c.is_whitespace() && !"@\".".contains(c))
    {
        true => Ok(()),
        false => Err(format!(
            "recipient_delimiter {delimiter:?} may not contain '@', '\"', '.' or spaces"
        )),
    }
}
