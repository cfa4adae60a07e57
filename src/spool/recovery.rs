//! Opening a shard's spool at start-up: scan every segment, verify every
//! record, cut torn tails, copy damaged segments aside, rebuild the queue.
//!
//! It trusts nothing it reads and never panics on any byte content; what it
//! cannot read is reported (logged and counted), never silently dropped.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{flock, FlockOperation};
use spool_format::{
    parse_segment_file_name, scan_segment, QueueIndex, RecoveredSegment, SegmentCursor,
    SegmentScan, Tail,
};

use super::io::{Disk, StorageIo};
use super::segment::{sync_dir, Segment};
use super::shard::{ShardSpool, SpoolOptions, State};
use super::{io_err, SpoolError};
use crate::clock::Clock;
use crate::config::Config;

/// The options of shard `shard`'s spool: its directory under the
/// configured spool path, and the segment size.
pub fn options_for(config: &Config, shard: usize) -> SpoolOptions {
    SpoolOptions {
        dir: config
            .spool
            .path
            .join(spool_format::shard_dir_name(shard as u32)),
        shard: shard as u32,
        segment_size: config.spool.segment_size,
    }
}

/// Recovers shard `shard`'s spool as configured, logging what recovery
/// found; the file is the spool's lock, held while it runs.
pub fn recover(
    config: &Config,
    shard: usize,
    clock: Clock,
) -> Result<(ShardSpool, File), SpoolError> {
    let opts = options_for(config, shard);
    let started = clock.monotonic_ms();
    let (spool, report, lock) = open_shard(opts, clock.wall_ms())?;
    tracing::info!(
        shard,
        segments = report.segments,
        records = report.records,
        queued = report.queued_messages,
        torn_bytes = report.torn_bytes_dropped,
        damaged_regions = report.damaged_regions,
        damaged_messages = report.damaged_messages,
        elapsed_ms = clock.monotonic_ms() - started,
        "spool recovered"
    );
    Ok((spool, lock))
}

/// What recovery found, for the log and for tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: usize,
    pub queued_messages: usize,
    pub torn_bytes_dropped: u64,
    pub damaged_regions: usize,
    pub damaged_messages: u64,
    pub quarantined: Vec<PathBuf>,
}

/// Takes an exclusive lock on the shard directory so that two daemons never
/// append to the same log. The lock lives as long as the returned file.
fn lock_dir(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join("lock");
    let f = File::create(&path).map_err(io_err(&path, "creating lock file"))?;
    if let Err(errno) = flock(&f, FlockOperation::NonBlockingLockExclusive) {
        return Err(SpoolError::Io {
            path,
            what: "locking spool (is another petrel running on it?)",
            source: errno.into(),
        });
    }
    Ok(f)
}

/// Segment files of a shard directory, in id order.
pub fn list_segments(dir: &Path) -> Result<BTreeMap<u64, PathBuf>, SpoolError> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir, "listing spool"))? {
        let entry = entry.map_err(io_err(dir, "listing spool"))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = parse_segment_file_name(name) {
            out.insert(id, entry.path());
        }
    }
    Ok(out)
}

/// Copies a damaged segment aside into `quarantine/`, named after the
/// segment and the CRC32C of its bytes up to the end of the damage, which
/// later appends and tail cuts never change: the same damage found again
/// at the next start is not copied again (the damaged segment stays in
/// place, with its valid records still in use). Only the written part is
/// copied; the copy keeps the segment's size (the rest is a hole).
/// Returns the copy's path and whether it was made now.
fn quarantine(
    dir: &Path,
    seg: &Segment,
    scan: &SegmentScan,
) -> Result<(PathBuf, bool), SpoolError> {
    let qdir = dir.join("quarantine");
    std::fs::create_dir_all(&qdir).map_err(io_err(&qdir, "creating quarantine"))?;
    let name = seg
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let written = &seg.map[..seg.data_len()];
    let damage_end = (scan.damage.iter().map(|d| (d.offset + d.len) as usize))
        .max()
        .unwrap_or(spool_format::SEGMENT_HEADER_LEN)
        .min(written.len());
    let id = crc32c::crc32c(&written[..damage_end]);
    let dst = qdir.join(format!("{name}.{id:08x}"));
    if dst.exists() {
        return Ok((dst, false));
    }
    let tmp = qdir.join(format!("{name}.partial"));
    let copy = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        std::io::Write::write_all(&mut f, written)?;
        f.set_len(seg.map.len() as u64)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &dst)
    };
    copy().map_err(io_err(&dst, "copying damaged segment aside"))?;
    Ok((dst, true))
}

/// Cuts a torn tail back: zeroes what follows the last valid record so a
/// later crash cannot make stale bytes look like part of the log.
fn cut_tail(io: &dyn StorageIo, seg: &mut Segment, scan: &SegmentScan) -> Result<u64, SpoolError> {
    let Tail::Torn { dropped_bytes } = scan.tail else {
        return Ok(0);
    };
    let end = scan.end;
    let stop = (end as u64 + dropped_bytes).min(seg.map.len() as u64) as usize;
    seg.map[end..stop].fill(0);
    seg.sync_blocking(io)?;
    Ok(dropped_bytes)
}

/// Removes segment files a crash left half-built: they were never named
/// as segments, so nothing in them was ever acknowledged.
fn remove_unfinished_segments(dir: &Path) -> Result<(), SpoolError> {
    for entry in std::fs::read_dir(dir).map_err(io_err(dir, "listing spool"))? {
        let path = entry.map_err(io_err(dir, "listing spool"))?.path();
        let unfinished = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(super::segment::TEMP_SUFFIX))
            .is_some_and(|n| parse_segment_file_name(n).is_some());
        if unfinished {
            tracing::warn!(file = %path.display(), "removing a segment file left half-built by a crash");
            std::fs::remove_file(&path).map_err(io_err(&path, "removing unfinished segment"))?;
        }
    }
    Ok(())
}

/// Opens (creating if needed) a shard's spool and rebuilds its queue.
/// `now_ms` is the wall clock, used for new segments and id floors.
pub fn open_shard(
    opts: SpoolOptions,
    now_ms: u64,
) -> Result<(ShardSpool, RecoveryReport, File), SpoolError> {
    open_shard_on(opts, now_ms, Rc::new(Disk))
}

/// [`open_shard`] on the given storage (a faulty disk in tests).
pub fn open_shard_on(
    opts: SpoolOptions,
    now_ms: u64,
    io: Rc<dyn StorageIo>,
) -> Result<(ShardSpool, RecoveryReport, File), SpoolError> {
    std::fs::create_dir_all(&opts.dir).map_err(io_err(&opts.dir, "creating spool directory"))?;
    let lock = lock_dir(&opts.dir)?;
    remove_unfinished_segments(&opts.dir)?;
    let mut report = RecoveryReport::default();
    let mut segments = BTreeMap::new();
    let mut scans = Vec::new();
    let mut last_seq = 0;
    for (id, path) in list_segments(&opts.dir)? {
        if id > spool_format::MAX_SEGMENT_ID {
            return Err(SpoolError::SegmentIdsExhausted(id));
        }
        let mut seg = Segment::open(&path, id)?;
        // Everything past the last data extent reads as zeros, which the
        // scan would only walk through.
        let scan = scan_segment(&seg.map[..seg.data_len()], last_seq);
        last_seq = scan.last_seq;
        if scan.is_damaged() {
            let (q, new) = quarantine(&opts.dir, &seg, &scan)?;
            let copied = if new {
                "segment copied aside"
            } else {
                "copied aside at an earlier start"
            };
            tracing::error!(segment = %path.display(), copy = %q.display(), regions = scan.damage.len(),
                header_ok = scan.header.is_some(), "spool damage before the tail; {copied}, valid records kept");
            report.quarantined.push(q);
            report.damaged_regions += scan.damage.len().max(1);
        }
        let dropped = cut_tail(&*io, &mut seg, &scan)?;
        if dropped > 0 {
            tracing::warn!(segment = %path.display(), bytes = dropped, "torn tail cut back to the last valid record");
        }
        report.torn_bytes_dropped += dropped;
        report.records += scan.records.len();
        segments.insert(id, seg);
        scans.push((id, scan));
    }
    let index = {
        let segs: Vec<_> = scans
            .iter()
            .filter_map(|(id, scan)| {
                segments.get(id).map(|s| RecoveredSegment {
                    id: *id,
                    bytes: &s.map[..],
                    scan,
                })
            })
            .collect();
        QueueIndex::recover(&segs)
    };
    report.segments = segments.len();
    report.queued_messages = index.messages.len();
    report.damaged_messages = index.damaged_messages;
    if index.damaged_messages > 0 {
        tracing::error!(
            count = index.damaged_messages,
            "messages in the spool could not be read back"
        );
    }
    let found = Found {
        segments,
        scans,
        index,
        last_seq,
    };
    let state = resume_state(&opts, found, now_ms, io)?;
    let spool = ShardSpool::from_state(opts, state);
    spool.reclaim()?;
    Ok((spool, report, lock))
}

/// What the scan of a shard's segments found.
struct Found {
    segments: BTreeMap<u64, Segment>,
    scans: Vec<(u64, SegmentScan)>,
    index: QueueIndex,
    last_seq: u64,
}

/// Picks up appending where the log ended, or starts a new segment.
fn resume_state(
    opts: &SpoolOptions,
    found: Found,
    now_ms: u64,
    io: Rc<dyn StorageIo>,
) -> Result<State, SpoolError> {
    let Found {
        mut segments,
        scans,
        index,
        last_seq,
    } = found;
    // Ids stay unique across restarts even after every segment is reclaimed.
    // Ids never repeat: past every record and every segment's starting
    // sequence (an empty newest segment may be all that is left), and not
    // below the clock, so a spool started afresh does not reuse old ids.
    let header_seq = scans
        .iter()
        .filter_map(|(_, scan)| scan.header.map(|h| h.first_seq))
        .max()
        .unwrap_or(0);
    let seq = last_seq
        .max(index.max_seq)
        .max(header_seq)
        .max(now_ms.saturating_mul(1000));
    let resume = scans.last().and_then(|(id, scan)| {
        let size = segments.get(id)?.map.len();
        let header = scan.header.as_ref()?;
        // Never append after damage: start a fresh segment instead.
        (!scan.is_damaged() && scan.end + 4096 < size)
            .then(|| SegmentCursor::resume(header, scan.end, size))
    });
    let cursor = match resume {
        Some(c) => {
            if let Some(seg) = segments.get(&c.segment_id) {
                seg.prepare_for_appends();
            }
            c
        }
        None => {
            let id = match segments.keys().next_back() {
                Some(&last) => super::next_segment_id(last)?,
                None => 1,
            };
            let header = spool_format::SegmentHeader {
                shard: opts.shard,
                segment_id: id,
                segment_size: opts.segment_size,
                created_ms: now_ms,
                nonce: super::segment::random_nonce(),
                first_seq: seq,
            };
            let seg = Segment::create(&*io, &opts.dir, &header)?;
            let c = SegmentCursor::resume(&header, spool_format::SEGMENT_HEADER_LEN, seg.map.len());
            segments.insert(id, seg);
            c
        }
    };
    sync_dir(&opts.dir)?;
    Ok(State {
        segments,
        cursor,
        seq,
        index,
        dirty: Vec::new(),
        ahead: super::ahead::Ahead::default(),
        now_ms,
        inflight: BTreeMap::new(),
        unapplied_status: std::collections::HashMap::new(),
        io,
    })
}
