//! Delivery into a Maildir: `<maildir_root>/<user>/` with `cur/`, `new/`
//! and `tmp/` (made when missing), one file per recipient, written in
//! `tmp/` under a name unique to this delivery, `fsync`'d, renamed into
//! `new/`, and `new/` `fsync`'d: only then is the recipient delivered.
//! The file is `Return-Path:` and `Delivered-To:` (petrel is the final
//! delivery agent, RFC 5321 4.4) followed by the message as spooled, with
//! its CRLF line ends.
//!
//! Owns: the file names, the header lines added, what makes a local part a
//! safe directory name, the `Delivered-To:` loop rule, the order of the
//! writes and syncs, the modes and owner of what is made, and the cleaning
//! of stale files in `tmp/`.
//! Must never: write outside `<root>/<user>/`, leave a partial file in
//! `new/` (a crash can leave one in `tmp/`, which readers ignore), replace
//! a file already in `new/`, or run on a shard's thread (it blocks; see
//! `local::threads`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Files in `tmp/` older than this are left over from a crash: removed
/// when the Maildir is first used after a start (as Maildir readers do).
pub const TMP_MAX_AGE: Duration = Duration::from_secs(36 * 3600);

/// Whether `user` can be a directory under the root: one path component,
/// not empty, not `.`/`..` or anything starting with a dot (hidden, and
/// Maildir++ folders start with one), no `/` and no NUL.
pub fn safe_user(user: &str) -> bool {
    !user.is_empty() && !user.starts_with('.') && !user.contains(['/', '\0'])
}

/// The header lines petrel adds, in front of the message: the envelope
/// sender (`<>` for the null sender) and the recipient's mailbox.
pub fn header_prefix(out: &mut Vec<u8>, sender: &[u8], mailbox: &[u8]) {
    out.extend_from_slice(b"Return-Path: <");
    out.extend_from_slice(sender);
    out.extend_from_slice(b">\r\nDelivered-To: ");
    out.extend_from_slice(mailbox);
    out.extend_from_slice(b"\r\n");
}

/// True when the message's header already has a `Delivered-To:` naming
/// `mailbox` (without regard to case): it has been delivered here before
/// and came back, a mail loop.
pub fn delivered_before(message: &[u8], mailbox: &[u8]) -> bool {
    crate::smtp::header_field::any_value(&[message], b"Delivered-To", |value| {
        let value: Vec<u8> = value
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let bare = value
            .strip_prefix(b"<")
            .and_then(|v| v.strip_suffix(b">"))
            .unwrap_or(&value);
        bare.eq_ignore_ascii_case(mailbox)
    })
}

/// The host name as a file name part: `/` and `:` (which a Maildir name
/// cannot hold) as `\057` and `\072`, as other Maildir writers do.
pub fn host_part(hostname: &str) -> String {
    hostname.replace('/', "\\057").replace(':', "\\072")
}

/// What makes a delivery's file name unique on this machine.
#[derive(Debug, Clone, Copy)]
pub struct Unique {
    /// Wall time of the delivery.
    pub secs: u64,
    pub micros: u32,
    pub pid: u32,
    /// The shard, and its count of files written since the start.
    pub shard: usize,
    pub counter: u64,
}

impl Unique {
    /// The delivery now, by process `pid`, as file `counter` of `shard`.
    pub fn now(pid: u32, shard: usize, counter: u64) -> Unique {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Unique {
            secs: t.as_secs(),
            micros: t.subsec_micros(),
            pid,
            shard,
            counter,
        }
    }
}

/// The Maildir file name `<secs>.M<usec>P<pid>Q<shard>_<n>.<host>,S=<size>`
/// (the time, this process and its count of deliveries, the host, and
/// the file's size, which readers may use instead of a `stat`).
pub fn file_name(u: &Unique, host: &str, size: usize) -> String {
    format!(
        "{}.M{}P{}Q{}_{}.{host},S={size}",
        u.secs, u.micros, u.pid, u.shard, u.counter
    )
}

/// The permission bits of directories for files of `mode`: search (`x`)
/// added for whoever may read or write.
pub fn dir_mode(mode: u32) -> u32 {
    let mut m = mode & 0o777;
    for shift in [6, 3, 0] {
        if (m >> shift) & 0o6 != 0 {
            m |= 1 << shift;
        }
    }
    m
}

/// The user and group what is delivered belongs to (`maildir_owner`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    /// `None`: the group stays as made.
    pub gid: Option<u32>,
}

impl Owner {
    /// `"user"` or `"user:group"`, by name or number; empty: none (what is
    /// made belongs to the user petrel runs as). Looks names up in the
    /// system's user database, so it may block.
    pub fn parse(spec: &str) -> Result<Option<Owner>, String> {
        if spec.is_empty() {
            return Ok(None);
        }
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let uid = match user.parse::<u32>() {
            Ok(n) => n,
            Err(_) => match nix::unistd::User::from_name(user) {
                Ok(Some(u)) => u.uid.as_raw(),
                Ok(None) => return Err(format!("no user {user:?}")),
                Err(e) => return Err(format!("user {user:?}: {e}")),
            },
        };
        let gid = match group {
            None => None,
            Some(g) => Some(match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => match nix::unistd::Group::from_name(g) {
                    Ok(Some(gr)) => gr.gid.as_raw(),
                    Ok(None) => return Err(format!("no group {g:?}")),
                    Err(e) => return Err(format!("group {g:?}: {e}")),
                },
            }),
        };
        Ok(Some(Owner { uid, gid }))
    }
}

/// Why a file could not be delivered. Each is temporary: the recipient
/// is deferred.
#[derive(Debug, thiserror::Error)]
pub enum MaildirError {
    #[error("the Maildir root {0} does not exist or is not a directory")]
    RootMissing(PathBuf),
    #[error("maildir_owner: {0}")]
    Owner(String),
    #[error("{0}")]
    Unavailable(&'static str),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot give {path} to maildir_owner (uid {uid}): {source}; changing the owner needs privilege (CAP_CHOWN)")]
    Chown {
        path: PathBuf,
        uid: u32,
        source: io::Error,
    },
}

impl MaildirError {
    fn io(what: &'static str, path: &Path, source: io::Error) -> MaildirError {
        MaildirError::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }

    /// The reply that defers the recipient: 452 4.2.2 when the user is
    /// over quota (`EDQUOT`), else 451 4.3.0 (a full disk, an I/O error, a
    /// root that is missing or unusable).
    pub fn reply_code(&self) -> (u16, (u8, u16, u16)) {
        match self {
            MaildirError::Io { source, .. }
                if source.raw_os_error() == Some(rustix::io::Errno::DQUOT.raw_os_error()) =>
            {
                (452, (4, 2, 2))
            }
            _ => (451, (4, 3, 0)),
        }
    }

    /// True when the root itself is at fault (every user of the domain
    /// fails alike, and the operator must hear of it).
    pub fn is_root(&self) -> bool {
        matches!(self, MaildirError::RootMissing(_))
    }
}

/// One file to deliver.
#[derive(Debug, Clone)]
pub struct MaildirFile<'a> {
    pub root: &'a Path,
    /// Checked with [`safe_user`].
    pub user: &'a str,
    /// [`header_prefix`]'s lines.
    pub prefix: &'a [u8],
    /// The file's name ([`file_name`]).
    pub name: &'a str,
    /// Permission bits of the file (`maildir_mode`).
    pub mode: u32,
    pub owner: Option<Owner>,
    /// Remove stale files from `tmp/` first (the first use since start).
    pub clean_tmp: bool,
}

/// Delivers `message` behind `f.prefix` into `f.user`'s Maildir; the path
/// of the file in `new/` once it and `new/`'s entry for it are on disk.
pub fn deliver(f: &MaildirFile<'_>, message: &[u8]) -> Result<PathBuf, MaildirError> {
    if !f.root.is_dir() {
        return Err(MaildirError::RootMissing(f.root.to_owned()));
    }
    debug_assert!(safe_user(f.user));
    let dir = f.root.join(f.user);
    make_maildir(f, &dir)?;
    if f.clean_tmp {
        clean_tmp(&dir.join("tmp"), SystemTime::now());
    }
    let tmp = dir.join("tmp").join(f.name);
    let new = dir.join("new").join(f.name);
    if let Err(e) = write_synced(f, &tmp, message) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = rename_new(&tmp, &new) {
        let _ = fs::remove_file(&tmp);
        return Err(MaildirError::io("rename into", &new, e));
    }
    sync_dir(&dir.join("new"))?;
    Ok(new)
}

/// Writes the file in `tmp/`, with its mode and owner, and syncs it.
fn write_synced(f: &MaildirFile<'_>, tmp: &Path, message: &[u8]) -> Result<(), MaildirError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(f.mode & 0o777)
        .open(tmp)
        .map_err(|e| MaildirError::io("create", tmp, e))?;
    // The umask may have taken bits the operator asked for.
    file.set_permissions(fs::Permissions::from_mode(f.mode & 0o777))
        .map_err(|e| MaildirError::io("chmod", tmp, e))?;
    give(f.owner, &file, tmp)?;
    file.write_all(f.prefix)
        .and_then(|()| file.write_all(message))
        .map_err(|e| MaildirError::io("write", tmp, e))?;
    file.sync_all()
        .map_err(|e| MaildirError::io("fsync", tmp, e))
}

/// Moves the finished file into `new/`, never over an existing one.
fn rename_new(tmp: &Path, new: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    match renameat_with(CWD, tmp, CWD, new, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        // A file system without RENAME_NOREPLACE: the name is unique
        // anyway (time, process, shard and count).
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => fs::rename(tmp, new),
        Err(e) => Err(e.into()),
    }
}

fn sync_dir(dir: &Path) -> Result<(), MaildirError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| MaildirError::io("fsync", dir, e))
}

fn give(owner: Option<Owner>, file: &File, path: &Path) -> Result<(), MaildirError> {
    let Some(o) = owner else { return Ok(()) };
    let uid = rustix::fs::Uid::from_raw(o.uid);
    let gid = o.gid.map(rustix::fs::Gid::from_raw);
    rustix::fs::fchown(file, Some(uid), gid).map_err(|e| MaildirError::Chown {
        path: path.to_owned(),
        uid: o.uid,
        source: e.into(),
    })
}

/// Makes `dir` with `cur/`, `new/` and `tmp/` where missing, each with
/// the directory mode and owner, and syncs the directories whose entries
/// changed, so that a file later synced into `new/` is reachable after a
/// crash.
fn make_maildir(f: &MaildirFile<'_>, dir: &Path) -> Result<(), MaildirError> {
    if ["cur", "new", "tmp"].iter().all(|s| dir.join(s).is_dir()) {
        return Ok(());
    }
    let made_user = make_dir(f, dir)?;
    for sub in ["cur", "new", "tmp"] {
        make_dir(f, &dir.join(sub))?;
    }
    sync_dir(dir)?;
    if made_user {
        sync_dir(f.root)?;
    }
    Ok(())
}

/// Makes one directory (true) or finds it there (false).
fn make_dir(f: &MaildirFile<'_>, path: &Path) -> Result<bool, MaildirError> {
    let mode = dir_mode(f.mode);
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => return Ok(false),
        Err(e) => return Err(MaildirError::io("mkdir", path, e)),
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| MaildirError::io("chmod", path, e))?;
    if let Some(o) = f.owner {
        let gid = o.gid.map(rustix::fs::Gid::from_raw);
        rustix::fs::chown(path, Some(rustix::fs::Uid::from_raw(o.uid)), gid).map_err(|e| {
            MaildirError::Chown {
                path: path.to_owned(),
                uid: o.uid,
                source: e.into(),
            }
        })?;
    }
    Ok(true)
}

/// Removes the files in `tmp` last changed more than [`TMP_MAX_AGE`]
/// before `now`; how many. Failures are logged, never fatal.
pub fn clean_tmp(tmp: &Path, now: SystemTime) -> usize {
    let Ok(entries) = fs::read_dir(tmp) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .and_then(|m| m.modified().ok())
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > TMP_MAX_AGE);
        if !stale {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) => tracing::warn!(path = %entry.path().display(), error = %e,
                "cannot remove a stale file from a Maildir's tmp/"),
        }
    }
    removed
}

#[cfg(test)]
mod tests;
