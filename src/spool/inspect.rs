//! `petrel spool inspect DIR`: an offline report of a spool's segments,
//! records and queue, read without the daemon and without changing a byte.
//! Must never: write to the spool it reads.

use std::io::Write;
use std::path::Path;

use rkyv::util::AlignedVec;
use spool_format::{
    parse_shard_dir_name, scan_segment, QueueIndex, RecordKind, RecoveredSegment, Tail,
};

use super::recovery::list_segments;

/// Why inspecting failed.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Spool(#[from] super::SpoolError),
    #[error("writing report: {0}")]
    Out(#[from] std::io::Error),
}

/// Prints the report for a spool directory (or a single shard directory).
pub fn run(dir: &Path, out: &mut dyn Write) -> Result<(), InspectError> {
    let read = |p: &Path| {
        std::fs::read_dir(p).map_err(|source| InspectError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let mut shards: Vec<(u32, std::path::PathBuf)> = read(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((parse_shard_dir_name(e.file_name().to_str()?)?, e.path())))
        .collect();
    shards.sort();
    if shards.is_empty() {
        shards.push((0, dir.to_path_buf()));
    }
    let mut total_live = 0;
    for (shard, path) in shards {
        total_live += inspect_shard(shard, &path, out)?;
    }
    writeln!(out, "total queued messages: {total_live}")?;
    Ok(())
}

fn inspect_shard(shard: u32, dir: &Path, out: &mut dyn Write) -> Result<usize, InspectError> {
    writeln!(out, "shard {shard} ({})", dir.display())?;
    let mut images = Vec::new();
    for (id, path) in list_segments(dir)? {
        let read_err = |source| InspectError::Read {
            path: path.clone(),
            source,
        };
        let file = std::fs::File::open(&path).map_err(read_err)?;
        let size = file.metadata().map_err(read_err)?.len();
        // Past the last data extent the file reads as zeros: not read.
        let data = super::segment::data_len(&file, size);
        let mut aligned = AlignedVec::<16>::with_capacity(data as usize);
        aligned.resize(data as usize, 0);
        std::os::unix::fs::FileExt::read_exact_at(&file, aligned.as_mut_slice(), 0)
            .map_err(read_err)?;
        images.push((id, size, aligned));
    }
    let mut scans = Vec::new();
    let mut last = 0;
    for (id, size, bytes) in &images {
        let s = scan_segment(bytes, last);
        last = s.last_seq;
        let count = |k| s.records.iter().filter(|r| r.header.kind == k).count();
        let tail = match s.tail {
            Tail::Clean => "clean".to_string(),
            Tail::Torn { dropped_bytes } => {
                format!("torn ({dropped_bytes} bytes after the last record)")
            }
        };
        writeln!(
            out,
            "  segment {id:016x}: {} bytes, used {}, {} records ({} message, {} chunk, {} status), tail {tail}, header {}, damaged regions {}",
            size, s.end, s.records.len(), count(RecordKind::Message), count(RecordKind::Chunk),
            count(RecordKind::Status), if s.header.is_some() { "ok" } else { "BAD" }, s.damage.len()
        )?;
        for d in &s.damage {
            writeln!(out, "    damage at {}: {} bytes", d.offset, d.len)?;
        }
        scans.push((*id, s));
    }
    let segs: Vec<_> = scans
        .iter()
        .zip(&images)
        .map(|((id, scan), (_, _, bytes))| RecoveredSegment {
            id: *id,
            bytes,
            scan,
        })
        .collect();
    let q = QueueIndex::recover(&segs);
    let committed: std::collections::HashSet<u64> = segs
        .iter()
        .flat_map(|g| {
            g.scan
                .records
                .iter()
                .filter(|r| r.header.kind == RecordKind::Message)
                .map(move |r| (g, r))
        })
        .filter_map(|(g, r)| {
            spool_format::envelope::access_envelope(r.payload(g.bytes))
                .map(|e| e.msg_id.to_native())
        })
        .collect();
    let live = q.messages.len();
    writeln!(
        out,
        "  messages: {live} live ({} recipients pending), {} finished, {} damaged",
        q.pending_recipients(),
        committed.len().saturating_sub(live),
        q.damaged_messages
    )?;
    Ok(live)
}
