//! `petrel passwd`: hashes from stdin, a users file built and updated with
//! --file, and read back by `petrel::auth::Users`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use petrel::auth::Users;

/// Runs `petrel passwd ARGS` with `stdin` piped in.
fn passwd(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = match Command::new(env!("CARGO_BIN_EXE_petrel"))
        .arg("passwd")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("cannot run petrel: {e}"),
    };
    if let Some(mut input) = child.stdin.take() {
        // The child may exit before reading (usage errors): ignore EPIPE.
        let _ = input.write_all(stdin);
    }
    match child.wait_with_output() {
        Ok(output) => output,
        Err(e) => panic!("waiting for petrel: {e}"),
    }
}

fn ok(args: &[&str], stdin: &[u8]) -> String {
    let out = passwd(args, stdin);
    assert!(
        out.status.success(),
        "petrel passwd {args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn load(path: &Path) -> Users {
    match Users::load(path) {
        Ok(users) => users,
        Err(e) => panic!("{e}"),
    }
}

fn read(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

#[test]
fn builds_and_updates_a_users_file() {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    };
    let path = dir.path().join("users");
    let file = path.to_string_lossy().into_owned();

    assert_eq!(ok(&["alice", "--file", &file], b"first secret\n"), "");
    assert_eq!(ok(&["bob@example.com", "-f", &file], b"bob's pw\r\n"), "");
    let mode = match std::fs::metadata(&path) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(mode, 0o600);

    // A comment the operator added stays; alice's line is replaced in place.
    let text = format!("# mail users\n{}", read(&path));
    std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok(&["alice", "--file", &file], b"second secret"), "");
    let text = read(&path);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], "# mail users");
    assert!(lines[1].starts_with("alice:$argon2id$"), "{text}");
    assert!(lines[2].starts_with("bob@example.com:$argon2id$"), "{text}");

    let users = load(&path);
    assert_eq!(users.len(), 2);
    assert!(users.verify(b"alice", b"second secret"));
    assert!(!users.verify(b"alice", b"first secret"));
    assert!(users.verify(b"bob@example.com", b"bob's pw"));
    assert!(!users.verify(b"bob@example.com", b"bob's pw\r"));
    assert!(!users.verify(b"carol", b"second secret"));

    // No temporary files left behind.
    let names: Vec<_> = match std::fs::read_dir(dir.path()) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect(),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(names, ["users"]);
}

#[test]
fn prints_user_and_hash_without_file() {
    let out = ok(&["alice"], b"pw\n");
    let Some(line) = out.strip_suffix('\n') else {
        panic!("{out:?}")
    };
    let Some(hash) = line.strip_prefix("alice:") else {
        panic!("{out:?}")
    };
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert!(!line.contains('\n'));
}

#[test]
fn usage_errors_exit_2_and_write_nothing() {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    };
    let path = dir.path().join("users");
    let file = path.to_string_lossy().into_owned();
    for (user, stdin, why) in [
        ("", &b"pw\n"[..], "empty user name"),
        ("a:b", b"pw\n", "':'"),
        ("a b", b"pw\n", "whitespace"),
        ("#a", b"pw\n", "'#'"),
        ("alice", b"\n", "empty password"),
        ("alice", b"", "empty password"),
    ] {
        let out = passwd(&[user, "--file", &file], stdin);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{user:?}: {err}");
        assert!(err.contains(why), "{user:?}: {err}");
        assert!(out.stdout.is_empty());
        assert!(!path.exists(), "{user:?} created the file");
    }
    assert_eq!(passwd(&[], b"pw\n").status.code(), Some(2));
}
