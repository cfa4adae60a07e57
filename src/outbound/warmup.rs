//! Keeps the warm-up counts of the day across a restart: the process-wide
//! count cells of sources in warm-up (`budget`), written to
//! `<spool>/warmup-counts` by a thread of their own and read back at start.
//!
//! Shards hand over each source × destination cell the first time they
//! count on it (once per process and shard, not per message); the thread
//! writes the counts once a second when they changed, and once more at
//! stop, with the file replaced whole (written beside it, synced, then
//! renamed) so that a crash leaves the old counts or the new, never half.
//! Must never: run on a shard or make one wait; lose a day's counts at a
//! clean stop (a crash loses at most the last second's). The counts of an
//! earlier day are spent and not restored.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::budget::{self, Budget};
use crate::clock::Clock;
use crate::config::Config;
use crate::shaping::warmup::{parse_snapshot, snapshot, Counted, DailyCount};

/// The file in the spool directory.
pub const FILE_NAME: &str = "warmup-counts";
/// How often changed counts are written.
const WRITE_EVERY: Duration = Duration::from_secs(1);

enum Msg {
    /// A count cell and what it counts.
    Cell {
        source: String,
        destination: String,
        cell: &'static AtomicU64,
    },
    Stop,
}

/// Where shards hand cells over; unset when no store runs (no source is
/// in warm-up, or in unit tests).
static SINK: OnceLock<Mutex<Sender<Msg>>> = OnceLock::new();

/// The cells one shard has handed over already.
#[derive(Default)]
pub struct Seen(std::cell::RefCell<HashSet<(Rc<str>, Rc<str>)>>);

impl Seen {
    /// Hands `budget`'s count cell to the store the first time this shard
    /// uses it, if its source is in warm-up.
    pub fn note(&self, budget: &Budget, source_name: &str) {
        let Some(cell) = budget.warmup_cell() else {
            return;
        };
        let Some(sink) = SINK.get() else {
            return;
        };
        if !self
            .0
            .borrow_mut()
            .insert((budget.source_name.clone(), budget.name.clone()))
        {
            return;
        }
        let msg = Msg::Cell {
            source: source_name.to_owned(),
            destination: budget.name.to_string(),
            cell,
        };
        if let Ok(sink) = sink.lock() {
            let _ = sink.send(msg);
        }
    }
}

/// The thread that writes the counts.
pub struct Store {
    thread: JoinHandle<()>,
}

impl Store {
    /// Restores today's counts from the spool directory and starts the
    /// thread that keeps them; `None` when no source is in warm-up (or a
    /// store already runs in this process).
    pub fn start(config: &Config, clock: Clock) -> Option<Store> {
        if config.source.iter().all(|s| s.warmup.is_none()) {
            return None;
        }
        let path = config.spool.path.join(FILE_NAME);
        let (tx, rx) = mpsc::channel();
        let cells = restore(&path, config, clock.wall_ms());
        SINK.set(Mutex::new(tx)).ok()?;
        let thread = std::thread::Builder::new()
            .name("petrel-warmup".to_owned())
            .spawn(move || keep(&path, rx, cells))
            .ok()?;
        Some(Store { thread })
    }

    /// Writes the counts a last time and ends the thread.
    pub fn stop(self) {
        if let Some(Ok(sink)) = SINK.get().map(|s| s.lock()) {
            let _ = sink.send(Msg::Stop);
        }
        let _ = self.thread.join();
    }
}

/// A cell the store writes, by source and destination name.
type Cells = HashMap<(String, String), &'static AtomicU64>;

/// Today's counts from `path` put back into their cells; the cells
/// restored, to be written again.
fn restore(path: &Path, config: &Config, now_wall_ms: u64) -> Cells {
    let mut cells = Cells::new();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return cells,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e,
                "warm-up counts cannot be read; today's counts start from zero");
            return cells;
        }
    };
    let counts = match parse_snapshot(&text) {
        Ok(counts) => counts,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e,
                "warm-up counts are damaged; today's counts start from zero");
            return cells;
        }
    };
    let today = now_wall_ms / 86_400_000;
    for c in counts.into_iter().filter(|c| c.day == today) {
        let Some(i) = config.source.iter().position(|s| s.name == c.source) else {
            continue;
        };
        if config.source[i].warmup.is_none() {
            continue;
        }
        let cell = budget::sent_today(&config.source[i].name, &c.destination);
        DailyCount(cell).restore(c.day, c.count);
        cells.insert((c.source, c.destination), cell);
    }
    if !cells.is_empty() {
        tracing::info!(entries = cells.len(), "warm-up counts of today restored");
    }
    cells
}

/// The thread: takes cells, writes the counts when they changed.
fn keep(path: &Path, rx: Receiver<Msg>, mut cells: Cells) {
    let mut written = String::new();
    loop {
        let stop = match rx.recv_timeout(WRITE_EVERY) {
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => true,
            Ok(Msg::Cell {
                source,
                destination,
                cell,
            }) => {
                cells.insert((source, destination), cell);
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
        };
        let counts: Vec<Counted> = cells
            .iter()
            .map(|((source, destination), cell)| {
                let (day, count) = DailyCount(cell).read();
                Counted {
                    day,
                    count,
                    source: source.clone(),
                    destination: destination.clone(),
                }
            })
            .collect();
        let text = snapshot(&counts);
        if text != written {
            match write_whole(path, &text) {
                Ok(()) => written = text,
                Err(e) => tracing::warn!(path = %path.display(), error = %e,
                    "warm-up counts cannot be written; trying again"),
            }
        }
        if stop {
            return;
        }
    }
}

/// Replaces `path` with `text`: written beside it and synced, renamed
/// over it, and the directory synced.
fn write_whole(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = PathBuf::from(path);
    tmp.set_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(spool: &Path) -> Config {
        let text = format!(
            "[spool]\npath = {:?}\n[[source]]\nname = \"ip1\"\naddress = \"127.0.0.2\"\n\
             warmup = {{ start = \"2026-12-01\", daily = [5, 10] }}\n\
             [[source]]\nname = \"ip2\"\naddress = \"127.0.0.3\"\n",
            spool.display()
        );
        Config::from_str_named(&text, "test.toml").expect("config")
    }

    #[test]
    fn todays_counts_are_restored_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let noon = 20_789 * 86_400_000 + 43_200_000;
        let text = "petrel warmup-counts 1\n\
                    20789 3 ip1 restore-a.example\n\
                    20788 4 ip1 restore-b.example\n\
                    20789 2 ip2 restore-c.example\n\
                    20789 2 gone restore-d.example\n";
        std::fs::write(dir.path().join(FILE_NAME), text).unwrap();
        let cells = restore(&dir.path().join(FILE_NAME), &config, noon);
        assert_eq!(
            cells.len(),
            1,
            "only ip1's count of today: {:?}",
            cells.keys()
        );
        let a = DailyCount(budget::sent_today("ip1", "restore-a.example"));
        assert_eq!(a.read(), (20_789, 3));
        let b = DailyCount(budget::sent_today("ip1", "restore-b.example"));
        assert_eq!(b.read().1, 0, "yesterday's count is spent");
    }

    #[test]
    fn counts_are_written_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (tx, rx) = mpsc::channel();
        let cell = budget::sent_today("ip1", "write-a.example");
        DailyCount(cell).restore(20_789, 7);
        tx.send(Msg::Cell {
            source: "ip1".to_owned(),
            destination: "write-a.example".to_owned(),
            cell,
        })
        .unwrap();
        tx.send(Msg::Stop).unwrap();
        keep(&path, rx, Cells::new());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "petrel warmup-counts 1\n20789 7 ip1 write-a.example\n"
        );
        assert!(!path.with_extension("tmp").exists());
    }
}
