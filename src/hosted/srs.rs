//! The Sender Rewriting Scheme: the envelope sender of mail an alias
//! forwards to another server, and the way back for its bounces.
//!
//! A sender `local@domain` is rewritten `SRS0=HHHH=TT=domain=local@srs_domain`
//! (the common SRS0 form): `TT` is the day number (days since 1970, modulo
//! 1024) in two base32 characters, `HHHH` the first four base64 characters
//! of an HMAC-SHA256 of `TT`, `domain` and `local` (in ASCII lower case,
//! since servers on the way may change the case of a local part) with a
//! secret. A bounce to such an address is relayed to `local@domain` if the
//! hash is right and the day at most [`MAX_AGE_DAYS`] old.
//!
//! The secret is one line of at least 16 octets in `srs_secret_file`, or
//! in `<spool>/srs-secret`, made at first start from the kernel's CSPRNG
//! (mode 0600): the same for every shard and across restarts, so that a
//! bounce finds its way back after one.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use ring::hmac;

use super::{HostedError, Secret};
use crate::config::Config;

/// How old a rewritten address may be when its bounce comes back.
pub const MAX_AGE_DAYS: u32 = 21;
/// Shortest secret accepted, in octets.
pub const MIN_SECRET: usize = 16;
/// The secret made at first start: 32 random octets, base64.
const NEW_SECRET: usize = 32;
/// Characters of the hash kept.
const HASH_LEN: usize = 4;
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Day numbers wrap at this (two base32 characters).
const DAYS: u32 = 1024;

/// The secret and the domain of rewritten senders.
pub struct Srs {
    key: hmac::Key,
    domain: String,
}

impl std::fmt::Debug for Srs {
    // No secret in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Srs")
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

/// Why an `SRS0=` address was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrsError {
    #[error("not an SRS0 address")]
    Malformed,
    #[error("its hash is wrong")]
    Hash,
    #[error("it is older than {MAX_AGE_DAYS} days")]
    Expired,
}

/// The day number of a wall-clock time in ms, as SRS counts days.
pub fn day_of(wall_ms: u64) -> u32 {
    ((wall_ms / 86_400_000) % u64::from(DAYS)) as u32
}

impl Srs {
    pub fn new(secret: &[u8], domain: &str) -> Srs {
        Srs {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            domain: domain.to_ascii_lowercase(),
        }
    }

    /// The domain rewritten senders are in.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The rewritten form of `sender` (`local@domain`) on `day`; `None`
    /// for a sender without a domain.
    pub fn forward(&self, sender: &[u8], day: u32) -> Option<Vec<u8>> {
        let at = memchr::memrchr(b'@', sender)?;
        let (local, domain) = (&sender[..at], &sender[at + 1..]);
        let tt = day_text(day);
        let hash = self.hash(&tt, domain, local);
        let mut out = Vec::with_capacity(sender.len() + self.domain.len() + 16);
        for part in [
            &b"SRS0="[..],
            &hash,
            b"=",
            &tt,
            b"=",
            domain,
            b"=",
            local,
            b"@",
        ] {
            out.extend_from_slice(part);
        }
        out.extend_from_slice(self.domain.as_bytes());
        Some(out)
    }

    /// The original sender a rewritten local part stands for, if it is
    /// genuine and recent on `today`.
    pub fn reverse(&self, local: &str, today: u32) -> Result<String, SrsError> {
        let rest = strip_prefix_ignore_case(local, "SRS0=").ok_or(SrsError::Malformed)?;
        let mut parts = rest.splitn(4, '=');
        let (Some(hash), Some(tt), Some(domain), Some(orig)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SrsError::Malformed);
        };
        let day = parse_day(tt).ok_or(SrsError::Malformed)?;
        if domain.is_empty() || orig.is_empty() {
            return Err(SrsError::Malformed);
        }
        let want = self.hash(tt.as_bytes(), domain.as_bytes(), orig.as_bytes());
        if !hash.as_bytes().eq_ignore_ascii_case(&want) {
            return Err(SrsError::Hash);
        }
        if (today + DAYS - day) % DAYS > MAX_AGE_DAYS {
            return Err(SrsError::Expired);
        }
        Ok(format!("{orig}@{domain}"))
    }

    /// Whether `local` looks like one of our rewritten local parts.
    pub fn is_rewritten(local: &str) -> bool {
        strip_prefix_ignore_case(local, "SRS0=").is_some()
    }

    fn hash(&self, tt: &[u8], domain: &[u8], local: &[u8]) -> [u8; HASH_LEN] {
        let mut ctx = hmac::Context::with_key(&self.key);
        for part in [tt, b"=", domain, b"=", local] {
            ctx.update(&part.to_ascii_lowercase());
        }
        let tag = ctx.sign();
        let text = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
        let mut out = [0u8; HASH_LEN];
        out.copy_from_slice(&text.as_bytes()[..HASH_LEN]);
        out
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn day_text(day: u32) -> [u8; 2] {
    let day = day % DAYS;
    [BASE32[(day >> 5) as usize], BASE32[(day & 31) as usize]]
}

fn parse_day(tt: &str) -> Option<u32> {
    let value = |c: u8| {
        BASE32
            .iter()
            .position(|&b| b == c.to_ascii_uppercase())
            .map(|v| v as u32)
    };
    match tt.as_bytes() {
        &[a, b] => Some(value(a)? << 5 | value(b)?),
        _ => None,
    }
}

/// Where the secret is: `srs_secret_file`, or `srs-secret` in the spool.
pub fn secret_path(config: &Config) -> PathBuf {
    config
        .aliases
        .srs_secret_file
        .clone()
        .unwrap_or_else(|| config.spool.path.join("srs-secret"))
}

/// Reads the secret at `path`; makes it first when it is missing and
/// `secret` allows. `None`: missing, and not to be made.
pub fn load_secret(path: &Path, secret: Secret) -> Result<Option<Vec<u8>>, HostedError> {
    let fail = |what: String| HostedError::Secret {
        path: path.to_owned(),
        what,
    };
    match std::fs::read(path) {
        Ok(text) => {
            let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
            let line = line.trim_ascii();
            if line.len() < MIN_SECRET {
                return Err(fail(format!("shorter than {MIN_SECRET} octets")));
            }
            Ok(Some(line.to_vec()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && secret == Secret::MakeIfMissing => {
            make_secret(path).map(Some).map_err(|e| fail(e.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// Writes a new random secret (mode 0600, synced with its directory).
fn make_secret(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut raw = [0u8; NEW_SECRET];
    let mut filled = 0;
    while filled < raw.len() {
        filled +=
            rustix::rand::getrandom(&mut raw[filled..], rustix::rand::GetRandomFlags::empty())?;
    }
    let text = base64::engine::general_purpose::STANDARD.encode(raw);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    tracing::info!(path = %path.display(), "made the SRS secret");
    Ok(text.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srs() -> Srs {
        Srs::new(b"0123456789abcdef-secret", "fwd.example.net")
    }

    #[test]
    fn round_trip() {
        let s = srs();
        let day = day_of(1_700_000_000_000);
        let fwd = s
            .forward(b"Alice=x@Sender.Example", day)
            .expect("rewritten");
        let text = String::from_utf8(fwd).expect("utf8");
        assert!(
            text.starts_with("SRS0=") && text.ends_with("@fwd.example.net"),
            "{text}"
        );
        let local = text.rsplit_once('@').expect("at").0;
        let parts: Vec<_> = local.splitn(5, '=').collect();
        assert_eq!(parts[2].len(), 2);
        assert_eq!(&parts[3..], ["Sender.Example", "Alice=x"]);
        assert_eq!(
            s.reverse(local, day).as_deref(),
            Ok("Alice=x@Sender.Example")
        );
        // A server on the way folded the case: still ours.
        let lower = local.to_ascii_lowercase();
        assert_eq!(
            s.reverse(&lower, day + 3).as_deref(),
            Ok("alice=x@sender.example")
        );
        assert_eq!(s.forward(b"", day), None);
    }

    #[test]
    fn tampered_expired_and_foreign_addresses_are_refused() {
        let s = srs();
        let day = 1000;
        let text =
            String::from_utf8(s.forward(b"bob@sender.example", day).expect("rw")).expect("utf8");
        let local = text.rsplit_once('@').expect("at").0.to_owned();
        let tampered = local.replace("=bob", "=eve");
        assert_eq!(s.reverse(&tampered, day), Err(SrsError::Hash));
        let other_domain = local.replace("sender.example", "evil.example");
        assert_eq!(s.reverse(&other_domain, day), Err(SrsError::Hash));
        // The day wraps at 1024: 1000 + 21 is still good, + 22 is not.
        assert!(s.reverse(&local, (day + MAX_AGE_DAYS) % DAYS).is_ok());
        assert_eq!(
            s.reverse(&local, (day + MAX_AGE_DAYS + 1) % DAYS),
            Err(SrsError::Expired)
        );
        let stranger = Srs::new(b"another secret of ours", "fwd.example.net");
        assert_eq!(stranger.reverse(&local, day), Err(SrsError::Hash));
        for bad in [
            "SRS0=abcd",
            "SRS0=abcd=A=d=l",
            "SRS0=abcd=AA==l",
            "bob",
            "SRS0=abcd=!!=d=l",
        ] {
            assert_eq!(s.reverse(bad, day), Err(SrsError::Malformed), "{bad}");
        }
    }

    #[test]
    fn secret_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("spool/srs-secret");
        assert_eq!(load_secret(&path, Secret::ReadOnly).expect("read"), None);
        let made = load_secret(&path, Secret::MakeIfMissing)
            .expect("made")
            .expect("some");
        assert!(made.len() >= MIN_SECRET);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_secret(&path, Secret::MakeIfMissing)
            .expect("read")
            .expect("some");
        assert_eq!(made, again);
        let other = dir.path().join("other");
        let second = load_secret(&other, Secret::MakeIfMissing)
            .expect("made")
            .expect("some");
        assert_ne!(made, second, "each secret is random");
        std::fs::write(&path, "short\n").expect("write");
        let err = load_secret(&path, Secret::MakeIfMissing)
            .expect_err("short")
            .to_string();
        assert!(err.contains("shorter than 16"), "{err}");
    }
}
