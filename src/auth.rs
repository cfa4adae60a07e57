//! Users allowed to AUTH: the users file and its password hashes.
//!
//! The file (`[auth] users_file`) holds one user per line,
//! `USER:HASH`, where HASH is an argon2id PHC string
//! (`$argon2id$v=19$m=19456,t=2,p=1$SALT$OUTPUT`). Lines starting with `#`
//! and blank lines are ignored; leading and trailing spaces are. A user name
//! is any run of bytes without whitespace or `:` that does not start with
//! `#`, compared byte for byte. The file must not be readable or writable by
//! every user. `petrel passwd` writes entries; see README.md.
//!
//! Checking a password runs argon2 with the hash's parameters (about 20 ms
//! and 19 MiB with the defaults); an unknown user costs the same, so that the
//! time to answer does not tell which users exist.

#![deny(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use argon2::password_hash::{self, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params};

/// Verified against when the user is unknown, so that the reply takes as
/// long as for a known one (used only when the file names no user).
/// Default parameters; no password hashes to this output.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$\
    cGV0cmVsLWR1bW15LXNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Why a users file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{}: is readable or writable by every user (mode {mode:o}); \
         chmod 640 or 600 it",
        path.display()
    )]
    WorldAccessible { path: PathBuf, mode: u32 },
    #[error("{}:{line}: {what}", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        what: String,
    },
    #[error("{}:{line}: user {user} is already defined on line {first}", path.display())]
    Duplicate {
        path: PathBuf,
        line: usize,
        first: usize,
        user: String,
    },
}

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("reading random bytes for the salt: {0}")]
    Random(#[source] io::Error),
    #[error("hashing the password: {0}")]
    Argon2(password_hash::Error),
}

/// The users of a users file and their password hashes.
pub struct Users {
    /// User name → PHC string, already checked to parse as argon2id.
    hashes: HashMap<Vec<u8>, String>,
    /// Verified against for unknown users: the first user's hash, so that
    /// its parameters (and so its cost) are those of a real user.
    dummy: String,
}

impl fmt::Debug for Users {
    // No hashes in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Users")
            .field("users", &self.hashes.len())
            .finish_non_exhaustive()
    }
}

impl Users {
    /// Reads and checks a users file: every line, the hashes' parameters,
    /// duplicates, and the file's mode.
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let io_err = |source| UsersError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(io_err)?;
        // The mode of the file opened, not of whatever the path names later.
        let mode = file.metadata().map_err(io_err)?.mode();
        if mode & 0o006 != 0 {
            return Err(UsersError::WorldAccessible {
                path: path.to_owned(),
                mode: mode & 0o7777,
            });
        }
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(io_err)?;
        Users::parse(path, &text)
    }

    /// Parses users file contents; `path` is only for error messages.
    fn parse(path: &Path, text: &[u8]) -> Result<Users, UsersError> {
        let mut hashes = HashMap::new();
        let mut first_line: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut dummy = None;
        for (i, line) in text.split(|&b| b == b'\n').enumerate() {
            let line_no = i + 1;
            let malformed = |what: String| UsersError::Malformed {
                path: path.to_owned(),
                line: line_no,
                what,
            };
            let (user, hash) = match parse_line(line) {
                Line::Skip => continue,
                Line::User(user, hash) => (user, hash),
                Line::Bad(what) => return Err(malformed(what.to_owned())),
            };
            check_hash(hash).map_err(malformed)?;
            if let Some(&first) = first_line.get(user) {
                return Err(UsersError::Duplicate {
                    path: path.to_owned(),
                    line: line_no,
                    first,
                    user: String::from_utf8_lossy(user).into_owned(),
                });
            }
            // check_hash accepted it, so it is ASCII.
            let hash = String::from_utf8_lossy(hash).into_owned();
            dummy.get_or_insert_with(|| hash.clone());
            first_line.insert(user.to_vec(), line_no);
            hashes.insert(user.to_vec(), hash);
        }
        Ok(Users {
            hashes,
            dummy: dummy.unwrap_or_else(|| DUMMY_HASH.to_owned()),
        })
    }

    /// True if `user` (exact bytes) exists and `password` is theirs. An
    /// unknown user still costs one argon2 run.
    pub fn verify(&self, user: &[u8], password: &[u8]) -> bool {
        match self.hashes.get(user) {
            Some(hash) => password_matches(hash, password),
            None => {
                std::hint::black_box(password_matches(&self.dummy, password));
                false
            }
        }
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

/// An argon2id PHC string for `password`: default parameters
/// (m=19456 KiB, t=2, p=1) and a fresh 16-byte random salt.
pub fn hash_password(password: &[u8]) -> Result<String, HashError> {
    let mut salt = [0u8; password_hash::Salt::RECOMMENDED_LENGTH];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut salt))
        .map_err(HashError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(HashError::Argon2)?;
    let hash = Argon2::default()
        .hash_password(password, &salt)
        .map_err(HashError::Argon2)?;
    Ok(hash.to_string())
}

fn password_matches(phc: &str, password: &[u8]) -> bool {
    PasswordHash::new(phc)
        .is_ok_and(|hash| Argon2::default().verify_password(password, &hash).is_ok())
}

enum Line<'a> {
    /// Blank or comment.
    Skip,
    User(&'a [u8], &'a [u8]),
    Bad(&'static str),
}

fn parse_line(line: &[u8]) -> Line<'_> {
    let line = line.trim_ascii();
    if line.is_empty() || line.starts_with(b"#") {
        return Line::Skip;
    }
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return Line::Bad("expected USER:HASH");
    };
    let (user, hash) = (&line[..colon], line[colon + 1..].trim_ascii());
    if user.is_empty() {
        Line::Bad("empty user name")
    } else if user.iter().any(u8::is_ascii_whitespace) {
        Line::Bad("user name contains whitespace")
    } else if hash.is_empty() {
        Line::Bad("empty password hash")
    } else {
        Line::User(user, hash)
    }
}

/// Accepts only an argon2id PHC string with usable parameters and output.
fn check_hash(hash: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(hash).map_err(|_| "password hash is not ASCII".to_owned())?;
    let parsed = PasswordHash::new(text).map_err(|e| format!("not a PHC password hash ({e})"))?;
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return Err(format!(
            "password hash is {}, expected argon2id (make one with `petrel passwd`)",
            parsed.algorithm
        ));
    }
    Params::try_from(&parsed).map_err(|e| format!("bad argon2 parameters ({e})"))?;
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err("password hash has no salt or no output".to_owned());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// For `petrel passwd`.

/// Why a name cannot be a user of the users file, if it cannot.
pub fn invalid_user_name(user: &str) -> Option<&'static str> {
    if user.is_empty() {
        Some("empty user name")
    } else if user.contains(':') {
        Some("user name contains ':'")
    } else if user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("user name contains whitespace or control characters")
    } else if user.starts_with('#') {
        Some("user name starts with '#'")
    } else {
        None
    }
}

/// Reads one line (the password) and strips its line ending.
pub fn read_password_line(input: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    input.read_until(b'\n', &mut line)?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    Ok(line)
}

/// Prompts on stderr and reads a password from the terminal with echo off
/// (`stty -echo` on /dev/tty), then asks again to confirm.
pub fn prompt_password(user: &str) -> io::Result<Vec<u8>> {
    let tty = File::open("/dev/tty")?;
    let stty = |arg: &str| -> io::Result<()> {
        let status = std::process::Command::new("stty")
            .arg(arg)
            .stdin(tty.try_clone()?)
            .status()?;
        match status.success() {
            true => Ok(()),
            false => Err(io::Error::other(format!("stty {arg} failed"))),
        }
    };
    stty("-echo")?;
    let read = (|| {
        let mut stdin = io::stdin().lock();
        eprint!("Password for {user}: ");
        let first = read_password_line(&mut stdin)?;
        eprint!("\nAgain: ");
        let second = read_password_line(&mut stdin)?;
        eprintln!();
        match first == second {
            true => Ok(first),
            false => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the passwords differ",
            )),
        }
    })();
    let restored = stty("echo");
    let password = read?;
    restored?;
    Ok(password)
}

/// Adds `user:hash` to the users file at `path`, or replaces the user's
/// line, keeping every other line as it was. Writes a temporary file next to
/// it and renames it over, so readers see the old file or the new one. A
/// new file gets mode 0600; an existing one keeps its owner, group and mode
/// (less any access for every user, which `Users::load` refuses).
pub fn set_user(path: &Path, user: &str, hash: &str) -> io::Result<()> {
    let at = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    // Through a symlink, replace the file it points to, not the link.
    let path = match fs::canonicalize(path) {
        Ok(real) => real,
        Err(e) if e.kind() == io::ErrorKind::NotFound => path.to_owned(),
        Err(e) => return Err(at(e)),
    };
    let (old, meta) = match File::open(&path) {
        Ok(mut f) => {
            let meta = f.metadata().map_err(at)?;
            let mut old = Vec::new();
            f.read_to_end(&mut old).map_err(at)?;
            (old, Some(meta))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => (Vec::new(), None),
        Err(e) => return Err(at(e)),
    };
    let new = with_user(&old, user.as_bytes(), hash.as_bytes());

    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "users".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        if let Some(meta) = &meta {
            if (meta.uid(), meta.gid()) != (f.metadata()?.uid(), f.metadata()?.gid()) {
                std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()))?;
            }
            f.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o770))?;
        }
        f.write_all(&new)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(at)
}

/// `old` with `user`'s line replaced by `user:hash` (later lines for the same
/// user dropped), or with the line appended.
fn with_user(old: &[u8], user: &[u8], hash: &[u8]) -> Vec<u8> {
    let entry = [user, b":", hash, b"\n"].concat();
    let mut out = Vec::with_capacity(old.len() + entry.len());
    let mut replaced = false;
    for line in old.split_inclusive(|&b| b == b'\n') {
        match parse_line(line) {
            Line::User(u, _) if u == user => {
                if !replaced {
                    out.extend_from_slice(&entry);
                    replaced = true;
                }
            }
            _ => out.extend_from_slice(line),
        }
    }
    if !replaced {
        if out.last().is_some_and(|&b| b != b'\n') {
            out.push(b'\n');
        }
        out.extend_from_slice(&entry);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// Hashing is slow in debug builds; hash each test password once.
    fn hash_of(password: &str) -> &'static str {
        static HASHES: OnceLock<[String; 2]> = OnceLock::new();
        let hashes = HASHES.get_or_init(|| {
            let h = |p: &[u8]| match hash_password(p) {
                Ok(h) => h,
                Err(e) => panic!("{e}"),
            };
            [h(b"correct horse"), h(b"battery staple")]
        });
        match password {
            "correct horse" => &hashes[0],
            "battery staple" => &hashes[1],
            _ => panic!("no hash for {password}"),
        }
    }

    fn write(text: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("{e}"),
        };
        let path = dir.path().join("users");
        if let Err(e) = fs::write(&path, text)
            .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(mode)))
        {
            panic!("{e}");
        }
        (dir, path)
    }

    fn load(text: &str) -> Result<Users, UsersError> {
        let (_dir, path) = write(text, 0o640);
        Users::load(&path)
    }

    fn loaded(text: &str) -> Users {
        match load(text) {
            Ok(users) => users,
            Err(e) => panic!("{e}"),
        }
    }

    fn error(text: &str) -> String {
        match load(text) {
            Ok(users) => panic!("loaded {users:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn two_users() -> String {
        format!(
            "# petrel users\n\n  alice:{}\nbob:{}  \n",
            hash_of("correct horse"),
            hash_of("battery staple")
        )
    }

    #[test]
    fn hash_is_argon2id_with_default_params_and_random_salt() {
        let a = hash_of("correct horse");
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert!(check_hash(a.as_bytes()).is_ok());
        let b = match hash_password(b"correct horse") {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        };
        assert_ne!(a, b, "same salt twice");
    }

    #[test]
    fn verifies_good_and_bad_passwords() {
        let users = loaded(&two_users());
        assert_eq!(users.len(), 2);
        assert!(users.verify(b"alice", b"correct horse"));
        assert!(users.verify(b"bob", b"battery staple"));
        assert!(!users.verify(b"alice", b"battery staple"));
        assert!(!users.verify(b"bob", b"correct horse"));
        assert!(!users.verify(b"alice", b""));
        assert!(!users.verify(b"alice", b"correct horse\n"));
    }

    #[test]
    fn unknown_users_fail_even_with_a_known_password() {
        let users = loaded(&two_users());
        // The dummy is alice's hash: her password must still not let
        // anyone else in.
        assert!(!users.verify(b"carol", b"correct horse"));
        assert!(!users.verify(b"Alice", b"correct horse"));
        assert!(!users.verify(b"alice ", b"correct horse"));
        assert!(!users.verify(b"", b"correct horse"));
        let empty = loaded("# nobody yet\n");
        assert!(empty.is_empty());
        assert!(!empty.verify(b"alice", b"correct horse"));
    }

    #[test]
    fn the_dummy_hash_parses_with_default_params() {
        assert_eq!(check_hash(DUMMY_HASH.as_bytes()), Ok(()));
        assert!(!password_matches(DUMMY_HASH, b""));
    }

    #[test]
    fn malformed_lines_are_reported_with_their_line_number() {
        let good = hash_of("correct horse");
        for (text, at, what) in [
            (format!("# c\nalice {good}\n"), ":2: ", "expected USER:HASH"),
            (format!("\n\n:{good}\n"), ":3: ", "empty user name"),
            (format!("al ice:{good}\n"), ":1: ", "whitespace"),
            ("alice:\n".to_owned(), ":1: ", "empty password hash"),
            (
                "alice:secret\n".to_owned(),
                ":1: ",
                "not a PHC password hash",
            ),
            (
                "alice:$2y$10$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234\n".to_owned(),
                ":1: ",
                "not a PHC password hash",
            ),
            (
                format!(
                    "bob:{}\nalice:{}\n",
                    good,
                    good.replace("argon2id", "argon2i")
                ),
                ":2: ",
                "expected argon2id",
            ),
            (
                format!("alice:{}\n", good.replace("t=2", "t=0")),
                ":1: ",
                "bad argon2 parameters",
            ),
        ] {
            let e = error(&text);
            assert!(e.contains(at) && e.contains(what), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_duplicate_user_is_an_error() {
        let text = format!(
            "alice:{}\nbob:{}\n#\nalice:{}\n",
            hash_of("correct horse"),
            hash_of("battery staple"),
            hash_of("battery staple")
        );
        let e = error(&text);
        assert!(
            e.contains(":4: user alice is already defined on line 1"),
            "{e}"
        );
    }

    #[test]
    fn a_file_every_user_can_read_or_write_is_refused() {
        for mode in [0o644, 0o604, 0o642, 0o666] {
            let (_dir, path) = write(&two_users(), mode);
            match Users::load(&path) {
                Ok(_) => panic!("mode {mode:o} accepted"),
                Err(e) => {
                    let e = e.to_string();
                    assert!(e.contains("chmod 640 or 600"), "{e}");
                }
            }
        }
        for mode in [0o600, 0o640, 0o660, 0o400] {
            let (_dir, path) = write(&two_users(), mode);
            assert!(Users::load(&path).is_ok(), "mode {mode:o} refused");
        }
    }

    #[test]
    fn a_missing_file_is_an_io_error_naming_it() {
        let e = match Users::load(Path::new("/nonexistent/petrel-users")) {
            Ok(_) => panic!("loaded"),
            Err(e) => e.to_string(),
        };
        assert!(e.starts_with("/nonexistent/petrel-users: "), "{e}");
    }

    #[test]
    fn with_user_replaces_or_appends_and_keeps_the_rest() {
        let old = b"# users\nalice:OLD\n\n  # bob next\nbob:B\nalice:DUP\n";
        assert_eq!(
            with_user(old, b"alice", b"NEW"),
            b"# users\nalice:NEW\n\n  # bob next\nbob:B\n"
        );
        assert_eq!(
            with_user(b"alice:A", b"bob", b"B"),
            b"alice:A\nbob:B\n".to_vec()
        );
        assert_eq!(with_user(b"", b"bob", b"B"), b"bob:B\n".to_vec());
        // A commented-out entry is not the user's line.
        assert_eq!(
            with_user(b"#bob:X\n", b"bob", b"B"),
            b"#bob:X\nbob:B\n".to_vec()
        );
    }

    #[test]
    fn user_names_for_passwd() {
        assert_eq!(invalid_user_name("alice@example.com"), None);
        for bad in ["", "a:b", "a b", "a\tb", "#a", "a\u{7f}"] {
            assert!(invalid_user_name(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn password_line_endings_are_stripped() {
        for (input, want) in [
            (&b"pw\n"[..], &b"pw"[..]),
            (b"pw\r\n", b"pw"),
            (b"pw", b"pw"),
            (b"p w \n rest", b"p w "),
            (b"\n", b""),
        ] {
            let got = match read_password_line(&mut &input[..]) {
                Ok(got) => got,
                Err(e) => panic!("{e}"),
            };
            assert_eq!(got, want);
        }
    }
}
