//! The users of a hosted domain with `verify = "users"`: its `users_file`
//! and its `users` list.
//!
//! A users file holds one user a line, `user` or `user@domain`; anything
//! from the first `:` on is ignored, so the AUTH users file (`user:hash`)
//! serves as it is. A `user@domain` line of another domain is left out
//! (one file may serve several domains). Blank lines and lines starting
//! with `#` are ignored.

use std::collections::HashSet;
use std::path::Path;

use super::{content_lines, read, split_address, HostedError};
use crate::config::DomainSection;

/// The users of `d`, as `user_of` gives them.
pub(super) fn load(d: &DomainSection) -> Result<HashSet<String>, HostedError> {
    let mut users = HashSet::new();
    if let Some(path) = &d.users_file {
        parse_file(d, path, &read(path)?, &mut users)?;
    }
    for entry in &d.users {
        add(d, entry, &mut users).map_err(|what| HostedError::ConfigUser {
            domain: d.name.clone(),
            what,
        })?;
    }
    Ok(users)
}

/// Adds the users of the users file `text` (read from `path`) to `users`.
pub(super) fn parse_file(
    d: &DomainSection,
    path: &Path,
    text: &str,
    users: &mut HashSet<String>,
) -> Result<(), HostedError> {
    for (line, content) in content_lines(text) {
        let entry = content.split(':').next().unwrap_or_default().trim();
        add(d, entry, users).map_err(|what| HostedError::Line {
            path: path.to_owned(),
            line,
            what,
        })?;
    }
    Ok(())
}

/// Adds the user `entry` names in `d`, if any.
fn add(d: &DomainSection, entry: &str, users: &mut HashSet<String>) -> Result<(), String> {
    if let Some(user) = user_of_entry(d, entry)? {
        users.insert(user);
    }
    Ok(())
}

/// The user an entry names in `d`; none for a user of another domain.
fn user_of_entry(d: &DomainSection, entry: &str) -> Result<Option<String>, String> {
    let (local, domain) = match split_address(entry) {
        Some((local, domain)) => (local, Some(domain)),
        None => (entry, None),
    };
    let bad = local.is_empty()
        || local
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '@'));
    if bad {
        return Err(format!("{entry:?} is not a user name"));
    }
    match domain {
        Some(domain) if !crate::config::is_domain_name(domain) => {
            Err(format!("{entry:?}: {domain:?} is not a domain name"))
        }
        Some(domain) if !domain.eq_ignore_ascii_case(&d.name) => Ok(None),
        _ => Ok(Some(d.user_of(local).into_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosted::tests::domain;

    fn parse(d: &DomainSection, text: &str) -> Result<HashSet<String>, String> {
        let mut users = HashSet::new();
        parse_file(d, Path::new("/etc/users"), text, &mut users).map_err(|e| e.to_string())?;
        Ok(users)
    }

    #[test]
    fn users_file_lines() {
        let d = domain("example.org");
        let text = "# staff\n\nAlice\nbob@Example.ORG:$argon2id$v=19$x\n  carol : whatever \n\
                    dave@other.test\n";
        let users = parse(&d, text).expect("parsed");
        let mut got: Vec<_> = users.into_iter().collect();
        got.sort();
        assert_eq!(got, ["alice", "bob", "carol"]);
    }

    #[test]
    fn users_file_errors_name_the_line() {
        let d = domain("example.org");
        let err = parse(&d, "alice\n\nbad user\n").expect_err("refused");
        assert_eq!(err, "/etc/users:3: \"bad user\" is not a user name");
        let err = parse(&d, "# c\n@example.org\n").expect_err("refused");
        assert!(err.starts_with("/etc/users:2: "), "{err}");
        let err = parse(&d, "alice@bad..domain\n").expect_err("refused");
        assert!(
            err.starts_with("/etc/users:1: ") && err.contains("not a domain name"),
            "{err}"
        );
    }

    #[test]
    fn case_sensitive_domains_keep_the_case() {
        let mut d = domain("example.org");
        d.case_sensitive = true;
        let users = parse(&d, "Alice\n").expect("parsed");
        assert!(users.contains("Alice") && !users.contains("alice"));
    }

    #[test]
    fn config_list_and_file_together() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("users");
        std::fs::write(&path, "alice\n").expect("write");
        let mut d = domain("example.org");
        d.users_file = Some(path.clone());
        d.users = vec![
            "Bob".into(),
            "carol@example.org".into(),
            "x@other.test".into(),
        ];
        let users = load(&d).expect("loaded");
        assert_eq!(users.len(), 3);
        assert!(users.contains("bob") && users.contains("carol"));
        d.users = vec!["a b".into()];
        let err = load(&d).expect_err("refused").to_string();
        assert!(
            err.contains("example.org") && err.contains("\"a b\""),
            "{err}"
        );
        std::fs::remove_file(&path).expect("rm");
        let err = load(&d).expect_err("refused").to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}
