//! Who is a recipient here: the recipients of the hosted domains
//! (`[[domain]]`), read from their users files and lists, the alias table
//! (`[aliases] file`), the Sender Rewriting Scheme for forwards, the LMTP
//! probe that asks a domain's LMTP server whether a user exists, and the
//! resolution of one RCPT into the envelope recipients it stands for.
//!
//! Owns: reading the users files and the alias file (at start and at
//! reload, never per message), the SRS secret, and the expansion rules
//! (depth, loops, catch-all, sub-addressing and case by
//! `DomainSection::user_of`).
//! Must never: do I/O per message except the LMTP probe, which the
//! session runs on the SMTP machine's request and bounds in time.

mod aliases;
pub mod cache;
pub mod probe;
mod resolve;
pub mod srs;
mod users;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::config::{Config, DomainSection, ForwardSender};

pub use aliases::AliasTable;
pub use resolve::{Lookup, MAX_ALIAS_DEPTH, MAX_EXPANSION};
pub use srs::Srs;

/// Why the recipient tables could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HostedError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A line of a users file or of the alias file, with its place.
    #[error("{}:{line}: {what}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        what: String,
    },
    #[error("[[domain]] {domain}: users: {what}")]
    ConfigUser { domain: String, what: String },
    #[error("SRS secret {}: {what}", path.display())]
    Secret { path: PathBuf, what: String },
}

/// One hosted domain with the users it knows.
#[derive(Debug, Clone)]
pub struct Hosted {
    pub section: DomainSection,
    /// For `verify = "users"`: the users, as `user_of` gives them.
    pub users: HashSet<String>,
}

/// The recipient tables in force: hosted domains, aliases, SRS.
#[derive(Debug, Default)]
pub struct Recipients {
    pub domains: Vec<Hosted>,
    pub aliases: AliasTable,
    /// Present when forwards are rewritten (`forward_sender = "srs"`):
    /// the secret and the domain of rewritten senders.
    pub srs: Option<Srs>,
}

/// Whether the SRS secret may be made when it does not exist yet (the
/// daemon at start), or must only be read (`petrel check`, which changes
/// nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret {
    MakeIfMissing,
    ReadOnly,
}

impl Recipients {
    /// Reads every users file, the alias file and the SRS secret that
    /// `config` names.
    pub fn load(config: &Config, secret: Secret) -> Result<Recipients, HostedError> {
        let mut domains = Vec::with_capacity(config.domain.len());
        for d in &config.domain {
            domains.push(Hosted {
                users: users::load(d)?,
                section: d.clone(),
            });
        }
        let aliases = match &config.aliases.file {
            Some(path) => AliasTable::load(path, config)?,
            None => AliasTable::default(),
        };
        let srs = match config.aliases.forward_sender {
            ForwardSender::Srs if !config.domain.is_empty() => {
                let path = srs::secret_path(config);
                let key = srs::load_secret(&path, secret)?;
                let domain = config.aliases.srs_domain(&config.server.hostname);
                key.map(|key| Srs::new(&key, domain))
            }
            _ => None,
        };
        Ok(Recipients {
            domains,
            aliases,
            srs,
        })
    }

    /// The hosted domain `domain` names (any ASCII case, a trailing dot
    /// ignored).
    pub fn domain(&self, domain: &str) -> Option<&Hosted> {
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        self.domains
            .iter()
            .find(|d| d.section.name.eq_ignore_ascii_case(domain))
    }

    /// The domains mail is accepted for from anyone: the hosted ones and
    /// the domain of rewritten senders (bounces of forwards come back to
    /// it).
    pub fn local_domains(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .domains
            .iter()
            .map(|d| d.section.name.clone())
            .collect();
        if let Some(srs) = &self.srs {
            if self.domain(srs.domain()).is_none() {
                all.push(srs.domain().to_owned());
            }
        }
        all
    }

    /// The number of users and aliases, for the log.
    pub fn counts(&self) -> (usize, usize) {
        let users = self.domains.iter().map(|d| d.users.len()).sum();
        (users, self.aliases.len())
    }
}

/// Reads a whole file, naming it on failure.
fn read(path: &Path) -> Result<String, HostedError> {
    std::fs::read_to_string(path).map_err(|source| HostedError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The lines of `text` that hold something, numbered from 1, trimmed:
/// blank lines and `#` comment lines are left out.
fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// `local@domain` split at its last `@`.
pub fn split_address(address: &str) -> Option<(&str, &str)> {
    let at = address.rfind('@')?;
    Some((&address[..at], &address[at + 1..]))
}

/// Users and aliases keyed by the user a local part names in its domain.
type Key = (String, String);

fn key_of(section: &DomainSection, local: &str) -> Key {
    (section.user_of(local).into_owned(), section.name.clone())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A config hosting `name` (Maildir, every local part accepted).
    pub(crate) fn config(name: &str) -> Config {
        let text = format!(
            "[[domain]]\nname = \"{name}\"\ndelivery = \"maildir\"\nmaildir_root = \"/var/mail/{name}\"\nverify = \"none\"\n"
        );
        Config::from_str_named(&text, "test.toml").expect("config")
    }

    pub(crate) fn domain(name: &str) -> DomainSection {
        config(name).domain[0].clone()
    }

    #[test]
    fn loads_users_aliases_and_secret_and_names_local_domains() {
        let dir = tempfile::tempdir().expect("dir");
        let users = dir.path().join("users");
        std::fs::write(&users, "alice:$argon2id$...\n").expect("write");
        let aliases = dir.path().join("aliases");
        std::fs::write(&aliases, "sales@example.org: alice@example.org\n").expect("write");
        let text = format!(
            "[server]\nhostname = \"mx.example.net\"\n[spool]\npath = {spool:?}\n\
             [[domain]]\nname = \"example.org\"\ndelivery = \"maildir\"\nmaildir_root = \"/m\"\nusers_file = {users:?}\n\
             [aliases]\nfile = {aliases:?}\n",
            spool = dir.path().join("spool"),
        );
        let c = Config::from_str_named(&text, "t.toml").expect("config");
        let r = Recipients::load(&c, Secret::ReadOnly).expect("loaded");
        assert!(r.srs.is_none(), "check makes no secret");
        assert_eq!(r.local_domains(), ["example.org"]);
        let r = Recipients::load(&c, Secret::MakeIfMissing).expect("loaded");
        assert_eq!(r.counts(), (1, 1));
        assert_eq!(r.local_domains(), ["example.org", "mx.example.net"]);
        assert!(dir.path().join("spool/srs-secret").exists());
        std::fs::write(&aliases, "sales@example.org alice@example.org\n").expect("write");
        let err = Recipients::load(&c, Secret::ReadOnly)
            .expect_err("bad line")
            .to_string();
        assert_eq!(
            err,
            format!(
                "{}:1: expected `address: target, target, ...`",
                aliases.display()
            )
        );
    }
}
