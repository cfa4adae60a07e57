//! The writer on virtual time: rotation decisions and names, the
//! never-blocking recorder, and a file that cannot be written pausing the
//! log and then resuming it.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::*;
use crate::accounting::record::RecordType;
use crate::accounting::BounceCategory;

const DAY_MS: u64 = 86_400_000;
/// 2023-11-14T22:13:20Z.
const T0: u64 = 1_700_000_000_000;

/// Record `n`, rendered as one line.
fn line(n: u64) -> Vec<u8> {
    let (rcpt, queue_id) = (format!("user{n}@example.com"), format!("{n:016x}"));
    let record = Record::new(
        RecordType::Delivered,
        (T0 / 1000 + n, T0 / 1000),
        "news@sender.example",
        &rcpt,
        &queue_id,
    );
    let mut lines = Lines::new(Format::Csv, 0);
    lines.push(&record).unwrap_or_else(|e| panic!("{e}"));
    lines.take(0).map(|(bytes, _)| bytes).unwrap_or_default()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sink(path: &Path, rotation: Rotation) -> Sink {
    Sink::new(path.to_owned(), Format::Csv, rotation, Arc::default(), T0)
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

/// The files in `dir`, by name.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

const NEVER: Rotation = Rotation {
    size: u64::MAX,
    interval_ms: 0,
};

#[test]
fn rotation_is_due_by_size_or_by_age() {
    let rotation = Rotation {
        size: 1 << 20,
        interval_ms: DAY_MS,
    };
    assert!(!rotation.due(0, T0, T0));
    assert!(!rotation.due((1 << 20) - 1, T0, T0 + DAY_MS - 1));
    assert!(rotation.due(1 << 20, T0, T0), "by size");
    assert!(rotation.due(10, T0, T0 + DAY_MS), "by age");
    let by_size_only = Rotation {
        interval_ms: 0,
        ..rotation
    };
    assert!(!by_size_only.due(10, T0, T0 + 365 * DAY_MS));
    assert!(
        !rotation.due(10, T0 + 5, T0),
        "a clock stepped back is no age"
    );
}

#[test]
fn rotated_names_are_utc_stamps_with_a_counter_when_taken() {
    assert_eq!(utc_stamp(0), "19700101T000000");
    assert_eq!(utc_stamp(1_700_000_000), "20231114T221320");
    assert_eq!(utc_stamp(951_782_400 + 3599), "20000229T005959");
    let path = Path::new("/var/log/petrel/acct.csv");
    let free = rotated_path(path, T0 + 999, |_| false);
    assert_eq!(free, Path::new("/var/log/petrel/acct.csv.20231114T221320"));
    let taken = [free.clone(), free.with_extension("20231114T221320.1")];
    let third = rotated_path(path, T0, |p| taken.iter().any(|t| t == p));
    assert_eq!(
        third,
        Path::new("/var/log/petrel/acct.csv.20231114T221320.2")
    );
}

#[test]
fn the_recorder_never_blocks_and_counts_what_it_drops() {
    let (recorder, rx) = channel(4, Format::Csv);
    let other = recorder.clone();
    for n in 0..4 {
        recorder.send(line(n), 2);
    }
    assert_eq!(recorder.dropped(), 0);
    // The writer takes nothing: the channel is full, and each further
    // batch returns at once, its records dropped and counted.
    for n in 4..10 {
        other.send(line(n), 3);
    }
    assert_eq!(recorder.dropped(), 18);
    assert_eq!(other.dropped(), 18, "one count for every clone");
    assert!(matches!(rx.try_recv(), Ok(Message::Batch(bytes, 2)) if bytes == line(0)));
    recorder.send(line(10), 1);
    assert_eq!(
        recorder.dropped(),
        18,
        "room again after the writer took one"
    );
    drop(rx);
    recorder.send(line(11), 5);
    assert_eq!(recorder.dropped(), 23, "a stopped writer drops too");
}

/// The lines and record counts in what `rx` holds.
fn batches(rx: &Receiver<Message>) -> Vec<(String, u64)> {
    rx.try_iter()
        .map(|m| match m {
            Message::Batch(bytes, n) => (String::from_utf8_lossy(&bytes).into_owned(), n),
            Message::Stop => panic!("no stop was sent"),
        })
        .collect()
}

#[test]
fn a_shard_posts_its_lines_in_batches_and_what_is_left_when_it_lets_go() {
    let (recorder, rx) = channel(64, Format::Csv);
    let log = ShardLog::new(recorder.clone());
    let diag = "smtp;250 2.0.0 ".to_owned() + &"x".repeat(400);
    let record = |rcpt| Record {
        dsn_diag: Some(&diag),
        bounce_cat: Some(BounceCategory::Other),
        ..Record::new(RecordType::Delivered, (1, 0), "a@b.example", rcpt, "q")
    };
    log.record(&record("first@example.com"));
    assert!(batches(&rx).is_empty(), "one record waits for more");
    log.flush();
    let posted = batches(&rx);
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].1, 1);
    assert!(posted[0].0.contains(",first@example.com,"), "{posted:?}");
    assert!(posted[0].0.ends_with("\r\n"), "whole lines");
    log.flush();
    assert!(batches(&rx).is_empty(), "nothing more to post");
    // Without a flush, a batch goes once it holds BATCH_BYTES.
    let per_record = posted[0].0.len();
    let n = BATCH_BYTES / per_record + 2;
    for _ in 0..n {
        log.record(&record("many@example.com"));
    }
    let posted = batches(&rx);
    assert_eq!(posted.len(), 1, "one batch once full");
    assert!(posted[0].0.len() >= BATCH_BYTES);
    assert_eq!(posted[0].0.matches("\r\n").count() as u64, posted[0].1);
    let left = n as u64 - posted[0].1;
    assert!(left >= 1, "the rest waits");
    drop(log);
    let posted = batches(&rx);
    assert_eq!(posted.len(), 1, "letting go posts what was left");
    assert_eq!(posted[0].1, left);
    assert_eq!(recorder.dropped(), 0);
}

#[test]
fn a_new_file_starts_with_the_header_and_an_old_one_is_appended_to() {
    let dir = tempdir();
    let path = dir.path().join("acct.csv");
    let mut sink = sink(&path, NEVER);
    sink.start(T0).unwrap_or_else(|e| panic!("{e}"));
    sink.append(&line(1), 1, T0);
    assert_eq!(
        read(&path).lines().count(),
        1,
        "only the header before a flush"
    );
    sink.tick(T0 + FLUSH_INTERVAL_MS - 1);
    assert_eq!(read(&path).lines().count(), 1);
    sink.tick(T0 + FLUSH_INTERVAL_MS);
    let text = read(&path);
    assert!(text.starts_with("type,timeLogged,"), "{text}");
    assert_eq!(text.lines().count(), 2);
    // A restart appends, with no second header.
    let mut again = self::sink(&path, NEVER);
    again.append(&line(2), 1, T0);
    again.finish(T0);
    let text = read(&path);
    assert_eq!(text.matches("type,").count(), 1, "{text}");
    assert_eq!(text.lines().count(), 3);
}

#[test]
fn a_file_past_its_size_is_rotated_and_a_fresh_one_opened() {
    let dir = tempdir();
    let path = dir.path().join("acct.csv");
    let rotation = Rotation {
        size: 2000,
        interval_ms: 0,
    };
    let mut sink = sink(&path, rotation);
    let mut now = T0;
    for n in 0..40 {
        sink.append(&line(n), 1, now);
        now += 250;
        sink.tick(now);
    }
    sink.finish(now);
    let names = files(dir.path());
    assert!(names.len() >= 3, "{names:?}");
    assert_eq!(names[0], "acct.csv");
    let mut rows = 0;
    for name in &names {
        let text = read(&dir.path().join(name));
        assert!(
            text.starts_with("type,timeLogged,"),
            "{name}: a header on each"
        );
        if name != "acct.csv" {
            assert!(name.starts_with("acct.csv.20231114T2213"), "{name}");
            // At most one flush of records past the size.
            assert!(
                (2000..2000 + 4 * 150).contains(&text.len()),
                "{name}: {}",
                text.len()
            );
        }
        rows += text.lines().count() - 1;
    }
    assert_eq!(rows, 40, "every record in exactly one file");
}

#[test]
fn a_file_older_than_the_interval_is_rotated_even_when_idle() {
    let dir = tempdir();
    let path = dir.path().join("acct.csv");
    let rotation = Rotation {
        size: u64::MAX,
        interval_ms: DAY_MS,
    };
    let mut sink = sink(&path, rotation);
    sink.start(T0).unwrap_or_else(|e| panic!("{e}"));
    sink.append(&line(1), 1, T0);
    sink.tick(T0 + 1000);
    sink.tick(T0 + DAY_MS - 1);
    assert_eq!(files(dir.path()), ["acct.csv"]);
    sink.tick(T0 + DAY_MS);
    assert_eq!(files(dir.path()), ["acct.csv", "acct.csv.20231115T221320"]);
    assert_eq!(
        read(&dir.path().join("acct.csv.20231115T221320"))
            .lines()
            .count(),
        2
    );
    assert_eq!(
        read(&path).lines().count(),
        1,
        "the fresh file has its header"
    );
    // The next day counts from when the fresh file was opened.
    sink.tick(T0 + 2 * DAY_MS - 1);
    assert_eq!(files(dir.path()).len(), 2);
    sink.tick(T0 + 2 * DAY_MS);
    assert_eq!(files(dir.path()).len(), 3);
}

/// A sink whose file, `acct.csv` in `dir`, is /dev/full: every write
/// fails with ENOSPC, as on a full disk.
fn full_disk(dir: &Path) -> (PathBuf, Sink) {
    let path = dir.join("acct.csv");
    std::os::unix::fs::symlink("/dev/full", &path).unwrap_or_else(|e| panic!("{e}"));
    let sink = sink(&path, NEVER);
    (path, sink)
}

#[test]
fn a_full_disk_pauses_the_log_which_resumes_when_writes_succeed() {
    let dir = tempdir();
    let (path, mut sink) = full_disk(dir.path());
    sink.start(T0)
        .unwrap_or_else(|e| panic!("opening works, writing does not: {e}"));
    let counters = sink.counters.clone();
    assert!(counters.paused(), "the header could not be written");
    sink.paused_limit = 1000;
    let mut now = T0;
    for n in 0..20 {
        sink.append(&line(n), 1, now);
        now += 200;
        sink.tick(now);
    }
    assert!(counters.paused());
    let kept = 20 - counters.lost();
    assert!(
        (1..20).contains(&kept),
        "records kept up to the limit, the rest lost: {kept}"
    );
    // The disk has room again.
    std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
    sink.tick(T0 + RETRY_INTERVAL_MS - 1);
    assert!(counters.paused(), "retries wait for their time");
    sink.tick(now + RETRY_INTERVAL_MS);
    assert!(!counters.paused(), "resumed");
    let text = read(&path);
    assert!(text.starts_with("type,"), "{text}");
    assert_eq!(
        text.lines().count() as u64,
        1 + kept,
        "no torn or doubled line"
    );
    sink.append(&line(99), 1, now);
    sink.finish(now + RETRY_INTERVAL_MS);
    assert_eq!(read(&path).lines().count() as u64, 2 + kept);
    assert_eq!(counters.lost.load(Ordering::Relaxed), 20 - kept);
}

#[test]
fn what_cannot_be_written_at_stop_is_counted_lost() {
    let dir = tempdir();
    let (_, mut sink) = full_disk(dir.path());
    sink.append(&line(1), 1, T0);
    sink.append(&line(2), 1, T0);
    sink.finish(T0);
    assert!(sink.counters.paused());
    assert_eq!(sink.counters.lost(), 2);
}
