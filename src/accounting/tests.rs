//! The log as the daemon runs it: started from its config section, fed by
//! recorders on other threads, stopped with everything written.

use super::*;
use crate::config::AccountingSection;

/// The log of `section`, as the daemon starts it.
fn start(section: &AccountingSection) -> std::io::Result<Option<Accounting>> {
    Accounting::start(&section.path, section.format, section.rotation())
}

fn section(path: &std::path::Path, format: Format) -> AccountingSection {
    AccountingSection {
        path: path.to_owned(),
        format,
        ..AccountingSection::default()
    }
}

/// Adds bounce `n` to `log`.
fn record(log: &ShardLog, n: u64) {
    let (rcpt, queue_id) = (format!("user{n}@example.com"), format!("{n:016x}"));
    log.record(&Record {
        bounce_cat: Some(BounceCategory::QuotaIssues),
        dsn_diag: Some("smtp;552 5.2.2 mailbox full, \"try\" later"),
        ..Record::new(
            RecordType::Bounced,
            (1_700_000_000 + n, 1_700_000_000),
            "news@sender.example",
            &rcpt,
            &queue_id,
        )
    });
}

fn started(section: &AccountingSection) -> Accounting {
    match start(section) {
        Ok(Some(accounting)) => accounting,
        Ok(None) => panic!("off"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn an_empty_path_is_no_log() {
    let off = AccountingSection::default();
    assert!(matches!(start(&off), Ok(None)));
}

#[test]
fn a_path_that_cannot_be_opened_fails_the_start() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let missing = dir.path().join("no-such-dir").join("acct.csv");
    assert!(start(&section(&missing, Format::Csv)).is_err());
}

#[test]
fn records_from_several_threads_are_all_written_by_stop() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("acct.csv");
    let accounting = started(&section(&path, Format::Csv));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let recorder = accounting.recorder();
            std::thread::spawn(move || {
                let log = ShardLog::new(recorder);
                for n in 0..100 {
                    record(&log, t * 100 + n);
                    if n % 10 == 0 {
                        log.flush();
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .unwrap_or_else(|_| panic!("a recording thread panicked"));
    }
    assert!(!accounting.paused());
    let dropped = accounting.dropped();
    accounting.stop();
    assert_eq!(dropped, 0, "400 records fit the channel");
    let mut reader = csv::Reader::from_path(&path).unwrap_or_else(|e| panic!("{e}"));
    let rows: Vec<csv::StringRecord> = reader
        .records()
        .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
        .collect();
    assert_eq!(rows.len(), 400);
    let mut queue_ids: Vec<&str> = rows.iter().filter_map(|row| row.get(22)).collect();
    queue_ids.sort_unstable();
    queue_ids.dedup();
    assert_eq!(queue_ids.len(), 400);
    assert!(rows.iter().all(|row| row.get(10) == Some("quota-issues")));
    assert_eq!(
        rows[0].get(8),
        Some("smtp;552 5.2.2 mailbox full, \"try\" later")
    );
}

#[test]
fn json_lines_are_written_too() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("acct.jsonl");
    let accounting = started(&section(&path, Format::Json));
    let recorder = accounting.recorder();
    let log = ShardLog::new(recorder.clone());
    record(&log, 1);
    record(&log, 2);
    log.flush();
    accounting.stop();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["rcpt"], "user2@example.com");
    assert_eq!(lines[1]["bounceCat"], "quota-issues");
    record(&log, 3);
    drop(log);
    assert_eq!(
        recorder.dropped(),
        1,
        "after stop, records are dropped and counted"
    );
}
