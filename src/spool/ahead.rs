//! Writing the space ahead of the append cursor before appends reach it.
//!
//! Segments are preallocated with fallocate, which leaves their blocks
//! "unwritten" in ext4's (and XFS's) extent tree. The first writeback into
//! such a block converts the extent, a metadata change that an fdatasync
//! covering it must write too: on ext4 on a virtio disk, fdatasync after
//! 9 KB of appends took 0.39 ms into unwritten blocks against 0.23 ms into
//! written ones.
//!
//! Small appends cross into new blocks at nearly every group commit, so the
//! sync task dirties the pages just ahead of the cursor before a sync
//! (write-faulting them with MADV_POPULATE_WRITE; no byte changes). Their
//! conversion rides that one sync, and the syncs of the appends that then
//! fill those pages are data-only. Only space past the cursor is touched,
//! where the format already reads zeros as the end of the segment, and on
//! the shard's own thread, between appends.
//!
//! Batches of large appends skip it: their conversion is already shared by
//! many bytes, and writing zeros ahead would add to the disk's load.
//! Must never: change a byte at or behind the append cursor.

/// Bytes ahead of the cursor kept written.
pub const AHEAD: usize = 256 << 10;

/// Batches that appended this much or more skip the writing ahead.
pub const LARGE_BATCH: usize = AHEAD / 4;

/// Page granularity of the writing ahead: the page size segments are
/// aligned to (the file system's block size is at most this on the
/// platforms the spool supports).
pub const PAGE: usize = crate::config::SEGMENT_SIZE_ALIGN as usize;

/// Where the written space ahead of the active segment's cursor ends.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ahead {
    segment: u64,
    /// Cursor position at the previous sync.
    last_pos: usize,
    /// End of the space written ahead (page-aligned).
    written_to: usize,
}

impl Ahead {
    /// Called before each sync with the active segment's cursor: returns
    /// the page-aligned byte range to dirty, if any.
    pub fn plan(&mut self, segment: u64, pos: usize, size: usize) -> Option<(usize, usize)> {
        if segment != self.segment {
            *self = Ahead {
                segment,
                last_pos: pos,
                written_to: 0,
            };
        }
        let batch = pos.saturating_sub(self.last_pos);
        self.last_pos = pos;
        if batch >= LARGE_BATCH {
            return None;
        }
        let from = pos.next_multiple_of(PAGE).max(self.written_to);
        let to = (pos.next_multiple_of(PAGE) + AHEAD).min(size / PAGE * PAGE);
        // Refill only once half the window is used, so each refill's
        // conversion covers many syncs.
        if from >= to || from - pos >= AHEAD / 2 {
            return None;
        }
        self.written_to = to;
        Some((from, to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: usize = 64 << 20;

    #[test]
    fn the_first_sync_of_a_segment_writes_a_window_past_the_cursor() {
        let mut a = Ahead::default();
        assert_eq!(a.plan(1, 100, SIZE), Some((PAGE, PAGE + AHEAD)));
        // A cursor on a page boundary starts the window there.
        let mut a = Ahead::default();
        assert_eq!(
            a.plan(1, 2 * PAGE, SIZE),
            Some((2 * PAGE, 2 * PAGE + AHEAD))
        );
    }

    #[test]
    fn small_batches_refill_only_once_half_the_window_is_used() {
        let mut a = Ahead::default();
        let (_, mut end) = a.plan(1, 0, SIZE).expect("first window");
        let mut pos = 0;
        let mut refills = 0;
        while pos < 4 * AHEAD {
            pos += 9000;
            if let Some((from, to)) = a.plan(1, pos, SIZE) {
                assert_eq!(from, end, "a refill continues where the last one ended");
                assert!(
                    end - pos < AHEAD / 2,
                    "refilled while more than half was left"
                );
                assert_eq!(to, pos.next_multiple_of(PAGE) + AHEAD);
                end = to;
                refills += 1;
            }
            assert!(end >= pos, "the cursor overtook the written space");
        }
        // Each refill covers many syncs.
        assert!((6..=9).contains(&refills), "{refills} refills");
    }

    #[test]
    fn large_batches_are_left_alone_and_nothing_behind_the_cursor_is_planned() {
        let mut a = Ahead::default();
        a.plan(1, 0, SIZE);
        assert_eq!(a.plan(1, LARGE_BATCH, SIZE), None);
        assert_eq!(a.plan(1, 10 * AHEAD, SIZE), None);
        // Small again, far past the old window: starts at the cursor.
        let pos = 10 * AHEAD + 10;
        assert_eq!(
            a.plan(1, pos + 10, SIZE),
            Some((
                pos.next_multiple_of(PAGE),
                pos.next_multiple_of(PAGE) + AHEAD
            ))
        );
    }

    #[test]
    fn a_new_segment_starts_over_and_the_window_stops_at_the_end() {
        let mut a = Ahead::default();
        a.plan(1, 0, SIZE);
        assert_eq!(a.plan(2, 64, SIZE), Some((PAGE, PAGE + AHEAD)));
        let size = 200 * 1024 + 100;
        let mut a = Ahead::default();
        assert_eq!(a.plan(3, 64, size), Some((PAGE, 200 * 1024)));
        assert_eq!(a.plan(3, 199 * 1024, size), None);
    }
}
