//! What the file system under the spool promises, told from its statfs(2)
//! magic number: the spool's safety rests on preallocation (a store into
//! the mapping never needs new space) and on fdatasync meaning durable.
//! Some file systems keep neither promise; `petrel run` and `petrel check`
//! warn about them at start. Only a warning: the operator may know better
//! (a btrfs directory with copy-on-write turned off, for one).

use std::path::Path;

const BTRFS_SUPER_MAGIC: u64 = 0x9123_683E;
const ZFS_SUPER_MAGIC: u64 = 0x2FC1_2FC1;
const BCACHEFS_SUPER_MAGIC: u64 = 0xCA45_1A4E;
const NFS_SUPER_MAGIC: u64 = 0x6969;
const SMB_SUPER_MAGIC: u64 = 0x517B;
const CIFS_SUPER_MAGIC: u64 = 0xFF53_4D42;
const SMB2_SUPER_MAGIC: u64 = 0xFE53_4D42;
const CEPH_SUPER_MAGIC: u64 = 0x00C3_6400;
const TMPFS_MAGIC: u64 = 0x0102_1994;
const RAMFS_MAGIC: u64 = 0x8584_58F6;
const OVERLAYFS_SUPER_MAGIC: u64 = 0x794C_7630;
const FUSE_SUPER_MAGIC: u64 = 0x6573_5546;

/// A file system whose promises the spool cannot rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caveat {
    /// Copy-on-write: fallocate reserves no blocks for later overwrites,
    /// so a store into the mapping can find the disk full.
    CopyOnWrite(&'static str),
    /// Over the network: writeback errors come late or not at all.
    Network(&'static str),
    /// In memory: nothing survives a reboot.
    Volatile(&'static str),
    /// overlayfs: the spool's durability is the upper layer's.
    Overlay,
    /// FUSE: whatever the user-space file system does.
    Fuse,
}

/// The caveat of a file system, from its statfs magic number.
pub fn classify(magic: u64) -> Option<Caveat> {
    Some(match magic {
        BTRFS_SUPER_MAGIC => Caveat::CopyOnWrite("btrfs"),
        ZFS_SUPER_MAGIC => Caveat::CopyOnWrite("ZFS"),
        BCACHEFS_SUPER_MAGIC => Caveat::CopyOnWrite("bcachefs"),
        NFS_SUPER_MAGIC => Caveat::Network("NFS"),
        SMB_SUPER_MAGIC | CIFS_SUPER_MAGIC | SMB2_SUPER_MAGIC => Caveat::Network("SMB/CIFS"),
        CEPH_SUPER_MAGIC => Caveat::Network("CephFS"),
        TMPFS_MAGIC => Caveat::Volatile("tmpfs"),
        RAMFS_MAGIC => Caveat::Volatile("ramfs"),
        OVERLAYFS_SUPER_MAGIC => Caveat::Overlay,
        FUSE_SUPER_MAGIC => Caveat::Fuse,
        _ => return None,
    })
}

impl Caveat {
    /// What it means for the mail, and what to do about it.
    pub fn warning(self) -> String {
        match self {
            Caveat::CopyOnWrite(fs) => format!(
                "the spool is on {fs}, a copy-on-write file system: preallocated segments hold no \
                 space for the writes into them, so with the disk full a write can fail in the \
                 mapping (SIGBUS: the daemon dies; acknowledged mail stays safe in the spool); \
                 keep free space far above [spool] segment_size times the shards, or turn \
                 copy-on-write off for the spool directory (btrfs: chattr +C on the empty \
                 directory) or use a non-COW file system"
            ),
            Caveat::Network(fs) => format!(
                "the spool is on {fs}, a network file system: write-back errors may surface late \
                 or never and a mapped read can fail (SIGBUS), so a 250 may not be a promise; \
                 put the spool on a local disk"
            ),
            Caveat::Volatile(fs) => format!(
                "the spool is on {fs}, in memory: every queued message is lost at a reboot or \
                 power loss, so a 250 is no promise; put the spool on a disk"
            ),
            Caveat::Overlay => "the spool is on overlayfs: its durability is that of the upper \
                 layer, and a container's layer may be discarded; mount a volume for the spool"
                .to_owned(),
            Caveat::Fuse => "the spool is on a FUSE file system: preallocation and fdatasync \
                 mean what that file system makes of them; prefer a local kernel file system"
                .to_owned(),
        }
    }
}

/// The caveat of the file system holding `path` (or, while it does not
/// exist yet, its nearest existing parent); `None` for an ordinary local
/// file system or when it cannot be told.
pub fn caveat(path: &Path) -> Option<Caveat> {
    let at = path.ancestors().find(|p| p.exists())?;
    let st = rustix::fs::statfs(at).ok()?;
    // f_type is signed on some targets; the magic numbers are 32 bits.
    #[allow(clippy::unnecessary_cast)]
    let magic = (st.f_type as u64) & 0xFFFF_FFFF;
    classify(magic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_numbers_are_classified() {
        let cases = [
            (0x9123_683E, Some(Caveat::CopyOnWrite("btrfs"))),
            (0x2FC1_2FC1, Some(Caveat::CopyOnWrite("ZFS"))),
            (0x6969, Some(Caveat::Network("NFS"))),
            (0xFF53_4D42, Some(Caveat::Network("SMB/CIFS"))),
            (0x0102_1994, Some(Caveat::Volatile("tmpfs"))),
            (0x794C_7630, Some(Caveat::Overlay)),
            (0x6573_5546, Some(Caveat::Fuse)),
            // ext4 and XFS keep both promises.
            (0xEF53, None),
            (0x5846_5342, None),
        ];
        for (magic, want) in cases {
            assert_eq!(classify(magic), want, "{magic:#x}");
        }
    }

    #[test]
    fn warnings_name_the_file_system_and_the_fix() {
        let w = Caveat::CopyOnWrite("btrfs").warning();
        assert!(w.contains("btrfs") && w.contains("chattr +C"), "{w}");
        let w = Caveat::Volatile("tmpfs").warning();
        assert!(w.contains("lost at a reboot"), "{w}");
    }

    #[test]
    fn a_path_not_made_yet_is_judged_by_its_parent() {
        let shm = Path::new("/dev/shm");
        let Ok(st) = rustix::fs::statfs(shm) else {
            return;
        };
        #[allow(clippy::unnecessary_cast)]
        let magic = (st.f_type as u64) & 0xFFFF_FFFF;
        assert_eq!(caveat(&shm.join("no/such/spool")), classify(magic));
    }
}
