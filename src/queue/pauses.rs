//! The operator's pauses and the `<spool>/paused` file that keeps them
//! across a restart: one pause a line, `DESTINATION [source=NAME]
//! [pool=NAME]`, `#` comments and blank lines ignored.
//!
//! It owns the file's format and the rule that the file is replaced whole
//! (a temporary file, fsync, rename, fsync of the directory), so a crash
//! leaves the old set or the new one, never half of either.
//! Must never: be read or written on a shard's mail path (the admin thread
//! writes it; shards get the set through their control channel).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::api::Scope;

/// The file's name in the spool directory.
pub const FILE_NAME: &str = "paused";

/// Pauses kept at most: each is checked when a queue is created.
pub const MAX_PAUSES: usize = 10_000;

/// Why the pauses could not be read or kept.
#[derive(Debug, thiserror::Error)]
pub enum PausesError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {why}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        why: String,
    },
}

/// The pause file of the spool at `spool`.
pub fn path(spool: &Path) -> PathBuf {
    spool.join(FILE_NAME)
}

/// Reads the pauses kept in `spool`; none when there is no file.
pub fn load(spool: &Path) -> Result<Vec<Scope>, PausesError> {
    let path = path(spool);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(PausesError::Io { path, source }),
    };
    parse(&text).map_err(|(line, why)| PausesError::Syntax { path, line, why })
}

/// Replaces the file in `spool` with `pauses`, durably.
pub fn save(spool: &Path, pauses: &[Scope]) -> Result<(), PausesError> {
    let path = path(spool);
    let io = |source| PausesError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(spool).map_err(io)?;
    let temp = spool.join(format!(".{FILE_NAME}.tmp"));
    let mut f = std::fs::File::create(&temp).map_err(io)?;
    f.write_all(format(pauses).as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&temp, &path).map_err(io)?;
    std::fs::File::open(spool)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// The file's text for `pauses`.
pub fn format(pauses: &[Scope]) -> String {
    let mut out = String::from(
        "# Destinations paused by `petrel queue pause`; kept across restarts.\n\
         # One a line: DESTINATION [source=NAME] [pool=NAME]\n",
    );
    for p in pauses {
        out.push_str(p.destination.as_deref().unwrap_or(""));
        if let Some(s) = &p.source {
            let _ = write!(out, " source={s}");
        }
        if let Some(s) = &p.pool {
            let _ = write!(out, " pool={s}");
        }
        out.push('\n');
    }
    out
}

/// The pauses in `text`, or the line (from 1) that is wrong and why.
pub fn parse(text: &str) -> Result<Vec<Scope>, (usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let mut p = Scope::destination(words.next().unwrap_or_default());
        for w in words {
            match w.split_once('=') {
                Some(("source", v)) if !v.is_empty() && p.source.is_none() => {
                    p.source = Some(v.to_owned())
                }
                Some(("pool", v)) if !v.is_empty() && p.pool.is_none() => {
                    p.pool = Some(v.to_owned())
                }
                _ => {
                    return Err((
                        i + 1,
                        format!("unexpected {w:?}: expected source=NAME or pool=NAME, once each"),
                    ))
                }
            }
        }
        if out.len() >= MAX_PAUSES {
            return Err((i + 1, format!("more than {MAX_PAUSES} pauses")));
        }
        out.push(p);
    }
    Ok(out)
}

/// Adds `pause` to `pauses` unless it is there; true when added.
pub fn add(pauses: &mut Vec<Scope>, pause: Scope) -> bool {
    if pauses.contains(&pause) {
        return false;
    }
    pauses.push(pause);
    true
}

/// Removes the pauses a resume of `scope` ends: every pause of its
/// destination when it names no source or pool, else the pause with the
/// same source and pool. How many.
pub fn remove(pauses: &mut Vec<Scope>, scope: &Scope) -> usize {
    let before = pauses.len();
    let narrowed = scope.source.is_some() || scope.pool.is_some();
    pauses.retain(|p| {
        let same_destination = p.destination == scope.destination;
        let ended =
            same_destination && (!narrowed || (p.source == scope.source && p.pool == scope.pool));
        !ended
    });
    before - pauses.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(d: &str, source: Option<&str>, pool: Option<&str>) -> Scope {
        Scope {
            destination: Some(d.to_owned()),
            source: source.map(str::to_owned),
            pool: pool.map(str::to_owned),
        }
    }

    #[test]
    fn the_file_reads_back_what_was_written() {
        let pauses = vec![
            scope("example.com", None, None),
            scope("gmail.com", Some("ip1"), None),
            scope("relay:smarthost.example:587", None, Some("bulk")),
        ];
        let text = format(&pauses);
        assert!(text.contains("\ngmail.com source=ip1\n"), "{text}");
        assert_eq!(parse(&text), Ok(pauses));
    }

    #[test]
    fn comments_and_blank_lines_are_skipped_and_bad_lines_named() {
        let text = "# note\n\n  example.com  \nexample.net pool=p source=s\n";
        assert_eq!(
            parse(text),
            Ok(vec![
                scope("example.com", None, None),
                scope("example.net", Some("s"), Some("p"))
            ])
        );
        let (line, why) = parse("a.example\nb.example colour=red\n").unwrap_err();
        assert_eq!(line, 2);
        assert!(why.contains("colour=red"), "{why}");
        assert!(parse("a.example source=x source=y\n").is_err());
        assert!(parse("a.example pool=\n").is_err());
    }

    #[test]
    fn save_replaces_the_file_whole_and_load_finds_none_without_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), Vec::new());
        let pauses = vec![scope("example.com", None, None)];
        save(dir.path(), &pauses).unwrap();
        assert_eq!(load(dir.path()).unwrap(), pauses);
        save(dir.path(), &[]).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Vec::new());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE_NAME], "no temporary file is left");
    }

    #[test]
    fn a_plain_resume_ends_every_pause_of_the_destination_a_narrow_one_its_own() {
        let mut pauses = vec![
            scope("a.example", None, None),
            scope("a.example", Some("ip1"), None),
            scope("a.example", None, Some("bulk")),
            scope("b.example", None, None),
        ];
        assert!(!add(&mut pauses, scope("b.example", None, None)));
        assert_eq!(
            remove(&mut pauses, &scope("a.example", Some("ip1"), None)),
            1
        );
        assert_eq!(pauses.len(), 3);
        assert_eq!(remove(&mut pauses, &scope("a.example", None, None)), 2);
        assert_eq!(pauses, [scope("b.example", None, None)]);
    }
}
