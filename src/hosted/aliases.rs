//! The alias table (`[aliases] file`): lines `address: target, target`,
//! each target an address here (a user, another alias) or elsewhere (a
//! forward). The left side is an address of a hosted domain, keyed by the
//! user it names there (`DomainSection::user_of`), so an alias for
//! `sales@example.org` also takes `Sales+x@example.org`.
//!
//! Must never: accept a line it cannot read or a left side listed twice
//! (each is an error with its `FILE:LINE`).

use std::collections::HashMap;
use std::path::Path;

use super::{content_lines, key_of, read, split_address, HostedError, Key};
use crate::config::Config;
use crate::smtp::address::{parse_path, DomainKind, ReversePath};

/// Longest alias file line read, in characters: a bound on what one line
/// can make the table hold.
const MAX_LINE: usize = 64 * 1024;

/// Aliases by the domain (as configured) and the user they stand for.
#[derive(Debug, Default, Clone)]
pub struct AliasTable {
    map: HashMap<String, HashMap<String, Vec<String>>>,
    len: usize,
}

impl AliasTable {
    /// Reads the alias file at `path`; left sides must be in a domain
    /// `config` hosts.
    pub fn load(path: &Path, config: &Config) -> Result<AliasTable, HostedError> {
        AliasTable::parse(path, &read(path)?, config)
    }

    /// Parses alias file contents; `path` is for error messages.
    pub fn parse(path: &Path, text: &str, config: &Config) -> Result<AliasTable, HostedError> {
        let mut table = AliasTable::default();
        let mut first: HashMap<Key, usize> = HashMap::new();
        for (line, content) in content_lines(text) {
            let err = |what: String| HostedError::Line {
                path: path.to_owned(),
                line,
                what,
            };
            let (key, targets) = parse_line(content, config).map_err(err)?;
            if let Some(&earlier) = first.get(&key) {
                let (user, domain) = &key;
                return Err(err(format!(
                    "{user}@{domain} is already an alias on line {earlier}"
                )));
            }
            first.insert(key.clone(), line);
            let (user, domain) = key;
            table.map.entry(domain).or_default().insert(user, targets);
            table.len += 1;
        }
        Ok(table)
    }

    /// The targets of the alias for `user` (as `user_of` gives it) in
    /// `domain` (as configured).
    pub fn targets(&self, user: &str, domain: &str) -> Option<&[String]> {
        self.map.get(domain)?.get(user).map(Vec::as_slice)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn parse_line(content: &str, config: &Config) -> Result<(Key, Vec<String>), String> {
    if content.len() > MAX_LINE {
        return Err(format!("line longer than {MAX_LINE} octets"));
    }
    let Some((left, right)) = content.split_once(':') else {
        return Err("expected `address: target, target, ...`".to_owned());
    };
    let left = left.trim();
    check_address(left)?;
    let (local, domain) =
        split_address(left).ok_or_else(|| format!("{left:?} is not an address"))?;
    let Some(section) = config.hosted_domain(domain) else {
        return Err(format!(
            "{left:?}: {domain} is not a hosted domain (no [[domain]] names it)"
        ));
    };
    let mut targets = Vec::new();
    for target in right.split(',').map(str::trim) {
        if target.is_empty() {
            return Err(format!("{left}: an empty target"));
        }
        check_address(target)?;
        targets.push(target.to_owned());
    }
    Ok((key_of(section, local), targets))
}

/// `address` is a plain `local@domain` (no source route, no address
/// literal) as RCPT would take it.
fn check_address(address: &str) -> Result<(), String> {
    let bad = || format!("{address:?} is not an address (local@domain)");
    let bracketed = format!("<{address}>");
    match parse_path(bracketed.as_bytes(), false, false) {
        Ok((ReversePath::Mailbox(m), rest))
            if rest.is_empty() && !m.source_route && m.domain_kind == DomainKind::Name =>
        {
            Ok(())
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosted::tests::config;

    fn parse(text: &str) -> Result<AliasTable, String> {
        let c = config("example.org");
        AliasTable::parse(Path::new("/etc/aliases"), text, &c).map_err(|e| e.to_string())
    }

    #[test]
    fn lines_comments_and_keys() {
        let t = parse(
            "# team\n\nSales@Example.ORG: alice@example.org, bob@partner.test\n\
             info@example.org:alice@example.org\n",
        )
        .expect("parsed");
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.targets("sales", "example.org"),
            Some(
                &[
                    "alice@example.org".to_owned(),
                    "bob@partner.test".to_owned()
                ][..]
            )
        );
        assert!(t.targets("info", "example.org").is_some());
        assert!(t.targets("nobody", "example.org").is_none());
    }

    #[test]
    fn every_error_names_its_line() {
        let cases = [
            (
                "a@example.org: b@example.org\nno colon here\n",
                2,
                "expected",
            ),
            (
                "a@example.org: b@example.org\nA@Example.org: c@example.org\n",
                2,
                "line 1",
            ),
            (
                "x@elsewhere.test: a@example.org\n",
                1,
                "not a hosted domain",
            ),
            ("\n\nnot an address: a@example.org\n", 3, "not an address"),
            (
                "a@example.org: b@example.org, , c@example.org\n",
                1,
                "empty target",
            ),
            ("a@example.org: b@[192.0.2.1]\n", 1, "not an address"),
            ("a@example.org: <b@example.org>\n", 1, "not an address"),
            ("a@example.org:\n", 1, "empty target"),
        ];
        for (text, line, what) in cases {
            let err = parse(text).expect_err(text);
            assert!(
                err.starts_with(&format!("/etc/aliases:{line}: ")),
                "{text:?}: {err}"
            );
            assert!(err.contains(what), "{text:?}: {err}");
        }
    }
}
