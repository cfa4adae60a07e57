//! The spool runtime on a real file system with real fdatasync: appends,
//! group commit, restart, reclaiming, compaction, torn tails and damage.

#[path = "support/shard.rs"]
mod shard_support;

use std::path::Path;

use petrel::spool::recovery::{open_shard, RecoveryReport};
use petrel::spool::{ShardSpool, SpoolOptions};
use spool_format::envelope::{Envelope, Recipient};
use spool_format::{RcptState, SegmentHeader};

const SEG: u64 = 1 << 20;

fn opts(dir: &Path) -> SpoolOptions {
    SpoolOptions {
        dir: dir.join("shard-0"),
        shard: 0,
        segment_size: SEG,
    }
}

fn open(dir: &Path) -> (ShardSpool, RecoveryReport, std::fs::File) {
    open_shard(opts(dir), 1_700_000_000_000).expect("open spool")
}

fn body(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|b| ((b * 7 + i * 13) % 251) as u8).collect()
}

async fn put(spool: &ShardSpool, i: usize, len: usize, rcpts: usize) -> u64 {
    put_in_pieces(spool, i, len, rcpts, 4000).await
}

async fn put_in_pieces(
    spool: &ShardSpool,
    i: usize,
    len: usize,
    rcpts: usize,
    piece: usize,
) -> u64 {
    let _pin = spool.pin_for_write();
    let data = body(i, len);
    let mut env = Envelope {
        reverse_path: b"s@x.test".to_vec(),
        body_len: len as u64,
        ..Default::default()
    };
    for piece in data.chunks(piece) {
        env.body.push(spool.append_chunk(piece).expect("chunk"));
    }
    env.recipients = (0..rcpts)
        .map(|r| Recipient::new(format!("r{r}@y.test").as_bytes(), 0, b""))
        .collect();
    spool.commit_message(&mut env).await.expect("commit")
}

/// Defers message `id`, then fills several segments with mail that is
/// delivered, so that only `id` pins the oldest segment.
async fn defer_then_fill(spool: &ShardSpool, id: u64) {
    let until = RcptState::Deferred {
        until_ms: 5,
        attempts: 1,
    };
    spool
        .record_status(id, until, &[0], b"451 later")
        .await
        .expect("defer");
    for i in 1..600 {
        let id = put(spool, i, 6000, 1).await;
        spool
            .record_status(id, RcptState::Delivered, &[0], b"250")
            .await
            .expect("status");
    }
}

#[test]
fn committed_messages_survive_a_restart_with_bodies_intact() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().to_path_buf();
    let d = dir.clone();
    let ids = shard_support::on_shard(move || async move {
        let (spool, report, _lock) = open(&d);
        assert_eq!(report.queued_messages, 0);
        let mut ids = Vec::new();
        for i in 0..50 {
            ids.push(put(&spool, i, 100 + i * 300, 3).await);
        }
        // Recipient 0 of the first message delivered, the rest still queued.
        spool
            .record_status(ids[0], RcptState::Delivered, &[0], b"250 ok")
            .await
            .expect("status");
        spool.close();
        ids
    });
    shard_support::on_shard(move || async move {
        let (spool, report, _lock) = open(&dir);
        assert_eq!(report.queued_messages, 50);
        assert_eq!(report.torn_bytes_dropped, 0);
        assert_eq!(spool.pending_recipients(ids[0]), Some(vec![1, 2]));
        for (i, id) in ids.iter().enumerate() {
            let mut b = Vec::new();
            spool.read_body(*id, &mut b).expect("body");
            assert_eq!(b, body(i, 100 + i * 300), "message {i}");
        }
        spool.close();
    });
}

/// Large chunks go to the file with `pwritev`, small ones through the
/// mapping; both must read back the same from the mapping, across segment
/// rolls, and after a restart with no torn bytes (header, CRC and padding
/// of the written-through records are whole).
#[test]
fn large_chunks_written_through_the_file_read_back_from_the_mapping_and_after_restart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().to_path_buf();
    let d = dir.clone();
    // (body length, piece size): around the write-through threshold, odd
    // lengths (padding), and the largest chunk (a quarter segment).
    let cases: Vec<(usize, usize)> = (0..24)
        .map(|i| match i % 4 {
            0 => (8191 * 3 + i, 8191),
            1 => (8192 * 2 + 5, 8192),
            2 => (100 * 1024 + i, 64 * 1024 + 3),
            _ => (SEG as usize / 4 + 17, SEG as usize / 4),
        })
        .collect();
    let expected = cases.clone();
    let ids = shard_support::on_shard(move || async move {
        let (spool, _, _lock) = open(&d);
        let mut ids = Vec::new();
        for (i, (len, piece)) in cases.iter().enumerate() {
            let id = put_in_pieces(&spool, i, *len, 1, *piece).await;
            let mut b = Vec::new();
            spool.read_body(id, &mut b).expect("body");
            assert_eq!(b, body(i, *len), "message {i} before restart");
            ids.push(id);
        }
        assert!(spool.segment_ids().len() >= 3, "segments rolled");
        spool.shutdown().await;
        ids
    });
    shard_support::on_shard(move || async move {
        let (spool, report, _lock) = open(&dir);
        assert_eq!(report.queued_messages, expected.len());
        assert_eq!(report.torn_bytes_dropped, 0);
        for (i, (id, (len, _))) in ids.iter().zip(&expected).enumerate() {
            let mut b = Vec::new();
            spool.read_body(*id, &mut b).expect("body");
            assert_eq!(b, body(i, *len), "message {i} after restart");
        }
        spool.shutdown().await;
    });
}

#[test]
fn concurrent_appends_share_syncs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().to_path_buf();
    shard_support::on_shard(move || async move {
        let (spool, _, _lock) = open(&dir);
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let s = spool.clone();
                glommio::spawn_local(async move { put(&s, i, 1024, 1).await })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        assert_eq!(spool.queue_len(), 64);
        assert!(spool.syncs() < 64, "{} syncs for 64 appends", spool.syncs());
        spool.close();
    });
}

#[test]
fn finished_segments_are_deleted_and_deferred_ones_copied_forward() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().to_path_buf();
    let d = dir.clone();
    let (deferred, first_segment) = shard_support::on_shard(move || async move {
        let (spool, _, _lock) = open(&d);
        let first_segment = spool.segment_ids()[0];
        let deferred = put(&spool, 0, 2000, 1).await;
        defer_then_fill(&spool, deferred).await;
        // Only the deferred message pins the oldest segment.
        assert_eq!(spool.segment_ids()[0], first_segment);
        assert!(spool.segment_ids().len() >= 3);
        let copied = spool.compact().await.expect("compact");
        assert_eq!(copied, 1);
        assert!(!spool.segment_ids().contains(&first_segment));
        assert!(spool.segment_ids().len() <= 2, "{:?}", spool.segment_ids());
        spool.close();
        (deferred, first_segment)
    });
    shard_support::on_shard(move || async move {
        let (spool, report, _lock) = open(&dir);
        assert_eq!(report.queued_messages, 1);
        assert!(!spool.segment_ids().contains(&first_segment));
        let mut b = Vec::new();
        spool.read_body(deferred, &mut b).expect("copied body");
        assert_eq!(b, body(0, 2000));
        spool.close();
    });
}

#[test]
fn torn_tail_is_cut_and_middle_damage_quarantined() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().to_path_buf();
    let d = dir.clone();
    let ids = shard_support::on_shard(move || async move {
        let (spool, _, _lock) = open(&d);
        let mut ids = Vec::new();
        for i in 0..10 {
            ids.push(put(&spool, i, 500, 1).await);
        }
        spool.close();
        ids
    });
    // Garbage after the last record (a torn write), and one flipped byte in
    // the middle of the third message's body chunk.
    let seg = std::fs::read_dir(dir.join("shard-0"))
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .expect("segment");
    let mut bytes = std::fs::read(&seg).expect("read");
    let scan = spool_format::scan_segment(&bytes, 0);
    bytes[scan.end + 5] = 0xAB;
    let third_chunk = scan.records[4].offset as usize + 40;
    bytes[third_chunk] ^= 0x01;
    std::fs::write(&seg, &bytes).expect("write");
    shard_support::on_shard(move || async move {
        let (spool, report, _lock) = open(&dir);
        assert_eq!(report.torn_bytes_dropped, 6); // up to and including the stray byte
        assert_eq!(report.damaged_regions, 1);
        assert_eq!(report.quarantined.len(), 1);
        assert!(report.quarantined[0].exists());
        assert_eq!(report.damaged_messages, 1);
        assert_eq!(report.queued_messages, 9);
        assert_eq!(spool.pending_recipients(ids[2]), None);
        assert_eq!(spool.pending_recipients(ids[3]), Some(vec![0]));
        spool.close();
    });
    // The damage is still there at the next starts, later in time and with
    // more appended behind it: reported again, but not copied again.
    for (start, now) in [(1u8, 1_700_000_100_000u64), (2, 1_700_000_200_000)] {
        let d = tmp.path().to_path_buf();
        shard_support::on_shard(move || async move {
            let (spool, report, _lock) = open_shard(opts(&d), now).expect("open spool");
            assert_eq!(report.damaged_regions, 1, "start {start}");
            assert_eq!(report.quarantined.len(), 1, "start {start}");
            put(&spool, 100 + start as usize, 500, 1).await;
            spool.close();
        });
    }
    let copies = std::fs::read_dir(tmp.path().join("shard-0/quarantine"))
        .expect("quarantine dir")
        .count();
    assert_eq!(copies, 1, "the same damage was copied aside twice");
}

#[test]
fn a_second_daemon_cannot_open_the_same_spool() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().to_path_buf();
    shard_support::on_shard(move || async move {
        let (spool, _, _lock) = open(&dir);
        let second = open_shard(opts(&dir), 1);
        assert!(second.is_err());
        spool.close();
    });
}

#[test]
fn a_segment_left_half_built_by_a_crash_is_removed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().to_path_buf();
    let shard = dir.join("shard-0");
    std::fs::create_dir_all(&shard).expect("dir");
    // What a kill between creating and naming a segment leaves behind.
    let stray = shard.join(format!("{}.tmp", spool_format::segment_file_name(7)));
    std::fs::write(&stray, b"").expect("stray");
    shard_support::on_shard(move || async move {
        let (spool, report, _lock) = open(&dir);
        assert!(!stray.exists());
        assert_eq!(report.damaged_regions, 0);
        let id = put(&spool, 0, 10, 1).await;
        assert_eq!(spool.pending_recipients(id), Some(vec![0]));
        spool.close();
    });
}

#[test]
fn message_ids_keep_rising_when_only_an_empty_segment_is_left() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().to_path_buf();
    let d = dir.clone();
    // Every segment rolled so far records the sequence it started at.
    let (last_id, newest_first_seq) = shard_support::on_shard(move || async move {
        let (spool, _, _lock) = open_shard(opts(&d), 1).expect("open");
        let mut last = 0;
        for i in 0..300 {
            last = put(&spool, i, 6000, 1).await;
        }
        let newest = *spool.segment_ids().last().expect("segments");
        spool.close();
        let path = d
            .join("shard-0")
            .join(spool_format::segment_file_name(newest));
        let bytes = std::fs::read(path).expect("segment");
        let h = spool_format::SegmentHeader::decode(&bytes).expect("header");
        (last, h.first_seq)
    });
    assert!(newest_first_seq > 0 && newest_first_seq < last_id);
    // What a spool looks like when everything was delivered and reclaimed
    // right after a roll: one empty segment, whose header alone knows
    // where the sequence stands. The clock (1 ms) knows nothing.
    let shard = dir.join("shard-0");
    for e in std::fs::read_dir(&shard).expect("dir").flatten() {
        if e.path().extension().is_some_and(|x| x == "seg") {
            std::fs::remove_file(e.path()).expect("rm");
        }
    }
    let h = SegmentHeader {
        shard: 0,
        segment_id: 99,
        segment_size: SEG,
        created_ms: 1,
        nonce: 7,
        first_seq: last_id + 10,
    };
    let mut img = vec![0u8; SEG as usize];
    img[..64].copy_from_slice(&h.encode());
    std::fs::write(shard.join(spool_format::segment_file_name(99)), &img).expect("write");
    shard_support::on_shard(move || async move {
        let (spool, _, _lock) = open_shard(opts(&dir), 1).expect("reopen");
        let id = put(&spool, 0, 10, 1).await;
        assert!(
            id > last_id + 10,
            "id {id} not past the segment's first_seq"
        );
        spool.close();
    });
}

/// Whether any block of `file` in `[from, to)` is still preallocated and
/// unwritten, from FS_IOC_FIEMAP (which syncs the file first).
fn has_unwritten(file: &std::fs::File, from: u64, to: u64) -> bool {
    use std::os::fd::AsRawFd;
    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
    const FIEMAP_FLAG_SYNC: u32 = 1;
    const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;
    const EXTENTS: usize = 64;
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Extent {
        logical: u64,
        physical: u64,
        length: u64,
        reserved64: [u64; 2],
        flags: u32,
        reserved: [u32; 3],
    }
    #[repr(C)]
    struct Fiemap {
        start: u64,
        length: u64,
        flags: u32,
        mapped_extents: u32,
        extent_count: u32,
        reserved: u32,
        extents: [Extent; EXTENTS],
    }
    let mut m = Fiemap {
        start: from,
        length: to - from,
        flags: FIEMAP_FLAG_SYNC,
        mapped_extents: 0,
        extent_count: EXTENTS as u32,
        reserved: 0,
        extents: [Extent::default(); EXTENTS],
    };
    // SAFETY: FS_IOC_FIEMAP fills at most extent_count extents of the
    // struct we own and pass by pointer.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut m as *mut Fiemap) };
    assert_eq!(
        rc,
        0,
        "FIEMAP on the spool's file system: {}",
        std::io::Error::last_os_error()
    );
    let n = m.mapped_extents as usize;
    assert!(n < EXTENTS, "more extents than asked for");
    let unwritten = m.extents[..n]
        .iter()
        .any(|e| e.flags & FIEMAP_EXTENT_UNWRITTEN != 0);
    // Holes would hide behind a gap between extents; preallocation leaves
    // none, so the extents must cover the whole range.
    let covered: u64 = m.extents[..n]
        .iter()
        .map(|e| (e.logical + e.length).min(to) - e.logical.max(from))
        .sum();
    assert_eq!(covered, to - from, "range not fully preallocated");
    unwritten
}

#[test]
fn group_commits_write_the_space_ahead_of_small_appends() {
    // On the checkout's file system (not a tmpfs /tmp): preallocation must
    // leave unwritten extents for this to mean anything.
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tmp");
    let dir = tmp.path().to_path_buf();
    shard_support::on_shard(move || async move {
        let (spool, _, _lock) = open(&dir);
        let id = spool.segment_ids()[0];
        let path = opts(&dir).dir.join(spool_format::segment_file_name(id));
        let file = std::fs::File::open(&path).expect("segment");
        assert!(
            has_unwritten(&file, 0, SEG),
            "a new segment's space is preallocated"
        );
        for i in 0..20 {
            put(&spool, i, 1024, 1).await;
        }
        // 20 small messages fill some 30 KB; the space written reaches a
        // window past them, and the rest stays preallocated.
        assert!(
            !has_unwritten(&file, 0, 256 << 10),
            "the space just past the appends is still unwritten"
        );
        assert!(has_unwritten(&file, SEG - (64 << 10), SEG));
        spool.close();
    });
}

/// Two messages naming the same body chunks (how the forwarded recipients
/// of a message with a rewritten sender are kept): each survives a
/// restart whole, one finishing frees nothing the other names, and a copy
/// forward of the one left takes its body along.
#[test]
fn two_messages_sharing_a_body_each_keep_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().to_path_buf();
    let d = dir.clone();
    let (own, forwards, first_segment) = shard_support::on_shard(move || async move {
        let (spool, _, _lock) = open(&d);
        let first_segment = spool.segment_ids()[0];
        let _pin = spool.pin_for_write();
        let data = body(7, 3000);
        let mut a = Envelope {
            reverse_path: b"s@x.test".to_vec(),
            body_len: data.len() as u64,
            recipients: vec![Recipient::new(b"local@y.test", 0, b"")],
            ..Default::default()
        };
        for piece in data.chunks(1000) {
            a.body.push(spool.append_chunk(piece).expect("chunk"));
        }
        let mut b = Envelope {
            reverse_path: b"SRS0=abcd=AA=x.test=s@fwd.test".to_vec(),
            recipients: vec![Recipient::new(b"far@z.test", 0, b"")],
            ..a.clone()
        };
        let (ra, rb) =
            futures_lite::future::zip(spool.commit_message(&mut a), spool.commit_message(&mut b))
                .await;
        let (own, forwards) = (ra.expect("commit"), rb.expect("commit"));
        assert_ne!(own, forwards);
        spool.close();
        (own, forwards, first_segment)
    });
    let d = dir.clone();
    shard_support::on_shard(move || async move {
        let (spool, report, _lock) = open(&d);
        assert_eq!(report.queued_messages, 2);
        for id in [own, forwards] {
            let mut b = Vec::new();
            spool.read_body(id, &mut b).expect("body");
            assert_eq!(b, body(7, 3000));
        }
        spool
            .record_status(own, RcptState::Delivered, &[0], b"250")
            .await
            .expect("status");
        defer_then_fill(&spool, forwards).await;
        // The finished one let go; the other still pins the shared body.
        assert_eq!(spool.segment_ids()[0], first_segment);
        assert_eq!(spool.compact().await.expect("compact"), 1);
        assert!(!spool.segment_ids().contains(&first_segment));
        spool.close();
    });
    shard_support::on_shard(move || async move {
        let (spool, report, _lock) = open(&dir);
        assert_eq!(report.queued_messages, 1);
        let mut b = Vec::new();
        spool.read_body(forwards, &mut b).expect("copied body");
        assert_eq!(b, body(7, 3000));
        spool.close();
    });
}
