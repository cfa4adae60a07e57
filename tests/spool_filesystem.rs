//! `petrel check` warns when the spool is on a file system that keeps
//! none of the spool's promises (here tmpfs, where nothing survives a
//! reboot), and stays quiet on an ordinary local disk.

use std::path::Path;
use std::process::Command;

/// Runs `petrel check` on a config whose spool is `spool`; returns its
/// exit code and standard error.
fn check_with_spool(spool: &Path) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("petrel.toml");
    // A postmaster, so that the only warning left to give is the spool's.
    let text = format!(
        "[server]\npostmaster = \"ops@example.com\"\n[spool]\npath = {:?}\n",
        spool.display().to_string()
    );
    std::fs::write(&config, text).expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("run petrel");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn is_tmpfs(path: &Path) -> bool {
    petrel::spool::filesystem::caveat(path)
        == Some(petrel::spool::filesystem::Caveat::Volatile("tmpfs"))
}

#[test]
fn check_warns_about_a_spool_in_memory() {
    let shm = Path::new("/dev/shm");
    if !is_tmpfs(shm) {
        eprintln!("no tmpfs at /dev/shm here: nothing to check");
        return;
    }
    let (code, err) = check_with_spool(&shm.join("petrel-spool-not-made"));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("petrel: warning: the spool is on tmpfs"),
        "{err}"
    );
    assert!(err.contains("lost at a reboot"), "{err}");
}

#[test]
fn check_is_quiet_about_an_ordinary_disk() {
    let here = Path::new(env!("CARGO_TARGET_TMPDIR"));
    if petrel::spool::filesystem::caveat(here).is_some() {
        eprintln!("the build directory is not on an ordinary disk: nothing to check");
        return;
    }
    let (code, err) = check_with_spool(&here.join("spool"));
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("warning"), "{err}");
}
