//! The image's disks, made without loop devices or mounts: the root tree packed into an
//! unpartitioned ext4 file by `mke2fs -d` (sized from the tree, checked with `e2fsck -fn`), and
//! the same file system copied, sparsely, 1 MiB into a GPT disk whose one partition is typed
//! "Linux root (x86-64)" (gptman writes the protective MBR and both tables). Every GUID comes
//! from the caller, derived from the build's recipe, so a rebuild carries the same ones. It does
//! not know what is in the tree.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;
use uuid::Uuid;

use crate::netboot::HOST_MKE2FS;

/// Where `e2fsck` is on the build host (Debian's e2fsprogs, beside mke2fs).
pub const HOST_E2FSCK: &str = "/usr/sbin/e2fsck";
pub const SECTOR: u64 = 512;
pub const MIB: u64 = 1 << 20;
/// Where the partition starts in the GPT disk (and the space left for the backup table at the
/// end).
pub const PARTITION_OFFSET: u64 = MIB;
/// GPT type "Linux root (x86-64)" (the Discoverable Partitions Specification).
pub const LINUX_ROOT_X86_64: Uuid = Uuid::from_u128(0x4f68bce3_e8cd_4db1_96e7_fbcaf984b709);
/// The share of free space the file system gets on top of the tree, in percent.
pub const HEADROOM_PERCENT: u64 = 30;
/// ext4's block and inode sizes as made here.
const BLOCK: u64 = 4096;
const INODE_SIZE: u64 = 256;
/// mke2fs's default bytes per inode for file systems over 512 MiB (`-T default`).
const INODE_RATIO: u64 = 16384;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("running {program} ({source}): install e2fsprogs (`just setup`)")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} on {path} failed ({status}): {stderr}")]
    Tool {
        program: String,
        path: String,
        status: String,
        stderr: String,
    },
    #[error("writing the partition table: {0}")]
    Gpt(#[from] gptman::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DiskError {
    let path = path.display().to_string();
    move |source| DiskError::Io { path, source }
}

/// What a tree needs on ext4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TreeSize {
    /// File, directory and long-symlink data in whole 4 KiB blocks (hard links once).
    pub bytes: u64,
    pub inodes: u64,
}

/// Walks `tree` (not following symlinks or leaving its file system) and totals what ext4 needs
/// for it.
pub fn measure(tree: &Path) -> std::io::Result<TreeSize> {
    let mut size = TreeSize::default();
    let mut seen = std::collections::HashSet::new();
    let dev = std::fs::symlink_metadata(tree)?.dev();
    let mut stack = vec![tree.to_path_buf()];
    while let Some(dir) = stack.pop() {
        size.inodes += 1;
        size.bytes += BLOCK;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                if meta.dev() == dev {
                    stack.push(entry.path());
                }
                continue;
            }
            if meta.nlink() > 1 && !seen.insert(meta.ino()) {
                continue;
            }
            size.inodes += 1;
            // Symlinks up to 60 bytes live in the inode; regular files take whole blocks.
            if meta.is_file() || (meta.is_symlink() && meta.len() >= 60) {
                size.bytes += meta.len().div_ceil(BLOCK) * BLOCK;
            }
        }
    }
    Ok(size)
}

/// The journal mke2fs gives a file system of `bytes` with 4 KiB blocks
/// (`ext2fs_default_journal_size`).
fn journal_bytes(bytes: u64) -> u64 {
    let blocks = bytes / BLOCK;
    let journal_blocks = match blocks {
        b if b < 32 * 1024 => 1024,
        b if b < 256 * 1024 => 4096,
        b if b < 512 * 1024 => 8192,
        b if b < 4096 * 1024 => 16384,
        _ => 32768,
    };
    journal_blocks * BLOCK
}

/// The file system for a tree: its size in MiB (the tree, its inode table and metadata, plus
/// [`HEADROOM_PERCENT`] free, and the journal) and its inode count (the default ratio's, or
/// half again the tree's if that is more).
pub fn fs_geometry(tree: TreeSize) -> (u64, u64) {
    let used = tree.bytes + tree.inodes * 3 / 2 * INODE_SIZE;
    // Bitmaps, group descriptors and reserved GDT blocks: about 1%.
    let with_meta = used + used / 100;
    let with_headroom = with_meta + with_meta * HEADROOM_PERCENT / 100;
    let bytes = with_headroom + journal_bytes(with_headroom);
    let mib = bytes.div_ceil(MIB);
    let inodes = (mib * MIB / INODE_RATIO).max(tree.inodes * 3 / 2);
    (mib, inodes)
}

/// One ext4 file system made from a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Spec {
    pub label: String,
    pub uuid: Uuid,
    pub hash_seed: Uuid,
    pub size_mib: u64,
    pub inodes: u64,
}

/// The `mke2fs` arguments that pack `tree` into `image` as `spec` says.
pub fn mke2fs_args(spec: &Ext4Spec, tree: &Path, image: &Path) -> Vec<String> {
    [
        "-q",
        "-F",
        "-t",
        "ext4",
        "-T",
        "default",
        "-b",
        &BLOCK.to_string(),
        "-I",
        &INODE_SIZE.to_string(),
        "-N",
        &spec.inodes.to_string(),
        "-L",
        &spec.label,
        "-U",
        &spec.uuid.to_string(),
        "-E",
        &format!("hash_seed={},root_owner=0:0", spec.hash_seed),
        "-d",
        &tree.display().to_string(),
        &image.display().to_string(),
        &format!("{}M", spec.size_mib),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run(program: &str, args: &[String], path: &Path) -> Result<(), DiskError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| DiskError::Spawn {
            program: program.to_string(),
            source,
        })?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr) + String::from_utf8_lossy(&out.stdout);
        let tail: Vec<&str> = text.lines().rev().take(12).collect();
        return Err(DiskError::Tool {
            program: program.to_string(),
            path: path.display().to_string(),
            status: out.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(())
}

/// Packs `tree` into a fresh (sparse) `image` and checks it with `e2fsck -fn`.
pub fn make_ext4(spec: &Ext4Spec, tree: &Path, image: &Path) -> Result<(), DiskError> {
    let _ = std::fs::remove_file(image);
    run(HOST_MKE2FS, &mke2fs_args(spec, tree, image), image)?;
    let args = ["-f", "-n"]
        .iter()
        .map(|s| s.to_string())
        .chain([image.display().to_string()])
        .collect::<Vec<_>>();
    run(HOST_E2FSCK, &args, image)
}

/// The GPT disk around one file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptLayout {
    pub disk_guid: Uuid,
    pub partition_guid: Uuid,
    pub partition_name: String,
    /// The file system's size (a whole number of MiB).
    pub fs_bytes: u64,
}

impl GptLayout {
    /// The disk: 1 MiB for the protective MBR and primary table, the partition, 1 MiB at the end
    /// for the backup table.
    pub fn disk_bytes(&self) -> u64 {
        PARTITION_OFFSET + self.fs_bytes + MIB
    }
    pub fn first_lba(&self) -> u64 {
        PARTITION_OFFSET / SECTOR
    }
    pub fn last_lba(&self) -> u64 {
        self.first_lba() + self.fs_bytes / SECTOR - 1
    }
}

/// Writes the protective MBR and the primary and backup GPT of `layout` into `disk` (already
/// `layout.disk_bytes()` long); the partition's contents are left as they are.
pub fn write_gpt<D: Read + Write + Seek>(
    disk: &mut D,
    layout: &GptLayout,
) -> Result<(), gptman::Error> {
    let mut gpt = gptman::GPT::new_from(disk, SECTOR, layout.disk_guid.to_bytes_le())?;
    gpt.align = PARTITION_OFFSET / SECTOR;
    gpt[1] = gptman::GPTPartitionEntry {
        partition_type_guid: LINUX_ROOT_X86_64.to_bytes_le(),
        unique_partition_guid: layout.partition_guid.to_bytes_le(),
        starting_lba: layout.first_lba(),
        ending_lba: layout.last_lba(),
        attribute_bits: 0,
        partition_name: layout.partition_name.as_str().into(),
    };
    gpt.write_into(disk)?;
    gptman::GPT::write_protective_mbr_into(disk, SECTOR)?;
    Ok(())
}

/// Copies `from` into `to` at `offset`, skipping runs of zeros (left as holes in a fresh
/// file); returns the bytes written.
pub fn copy_sparse(from: &Path, to: &File, offset: u64) -> std::io::Result<u64> {
    const CHUNK: usize = 64 * 1024;
    let mut src = File::open(from)?;
    let mut buf = vec![0u8; CHUNK];
    let (mut pos, mut written) = (0u64, 0u64);
    loop {
        let mut n = 0;
        while n < CHUNK {
            match src.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            return Ok(written);
        }
        if buf[..n].iter().any(|&b| b != 0) {
            to.write_all_at(&buf[..n], offset + pos)?;
            written += n as u64;
        }
        pos += n as u64;
    }
}

/// A sparse copy of `from` at `to` (written as `to` + `.partial`, renamed into place).
pub fn copy_file_sparse(from: &Path, to: &Path) -> Result<(), DiskError> {
    let partial = to.with_extension("partial");
    let len = std::fs::metadata(from).map_err(io(from))?.len();
    let file = File::create(&partial).map_err(io(&partial))?;
    file.set_len(len).map_err(io(&partial))?;
    copy_sparse(from, &file, 0).map_err(io(from))?;
    file.sync_all().map_err(io(&partial))?;
    std::fs::rename(&partial, to).map_err(io(to))
}

/// Writes the GPT disk `out` holding the file system image `fs` as its one partition.
pub fn gpt_image(fs: &Path, layout: &GptLayout, out: &Path) -> Result<(), DiskError> {
    let partial = out.with_extension("partial");
    let mut disk = File::create(&partial).map_err(io(&partial))?;
    disk.set_len(layout.disk_bytes()).map_err(io(&partial))?;
    copy_sparse(fs, &disk, PARTITION_OFFSET).map_err(io(fs))?;
    disk.seek(SeekFrom::Start(0)).map_err(io(&partial))?;
    write_gpt(&mut disk, layout)?;
    disk.sync_all().map_err(io(&partial))?;
    std::fs::rename(&partial, out).map_err(io(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// CRC-32 (IEEE 802.3, reflected), as the UEFI specification has GPT use it: written out
    /// here so the check does not lean on the code under test.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    fn layout() -> GptLayout {
        GptLayout {
            disk_guid: Uuid::from_u128(0x1111_2222_3333_4444_8555_6666_7777_8888),
            partition_guid: Uuid::from_u128(0xaaaa_bbbb_cccc_4ddd_8eee_ffff_0000_1111),
            partition_name: "debian-root".into(),
            fs_bytes: 4 * MIB,
        }
    }

    /// A disk of `layout()` whose partition holds a recognisable pattern, with the GPT written.
    fn disk() -> Vec<u8> {
        let l = layout();
        let mut bytes = vec![0u8; l.disk_bytes() as usize];
        bytes[PARTITION_OFFSET as usize..][..8].copy_from_slice(b"FSSTART!");
        let end = (PARTITION_OFFSET + l.fs_bytes) as usize;
        bytes[end - 8..end].copy_from_slice(b"FSEND!!!");
        let mut c = Cursor::new(bytes);
        write_gpt(&mut c, &l).unwrap();
        c.into_inner()
    }

    #[test]
    fn the_protective_mbr_covers_the_disk_with_one_ee_entry() {
        let d = disk();
        let sectors = layout().disk_bytes() / SECTOR;
        assert_eq!(&d[510..512], &[0x55, 0xaa]);
        let e = &d[446..462];
        assert_eq!(e[4], 0xee, "protective type");
        assert_eq!(u32_at(e, 8), 1, "starts at LBA 1");
        assert_eq!(u64::from(u32_at(e, 12)), sectors - 1, "covers the rest");
        assert!(d[462..510].iter().all(|&b| b == 0), "no other MBR entries");
    }

    /// Checks one GPT header at `lba` and returns (entries LBA, alternate LBA).
    fn check_header(d: &[u8], lba: u64) -> (u64, u64) {
        let l = layout();
        let h = &d[(lba * SECTOR) as usize..][..SECTOR as usize];
        assert_eq!(&h[0..8], b"EFI PART");
        assert_eq!(&h[8..12], &[0, 0, 1, 0], "revision 1.0");
        let size = u32_at(h, 12) as usize;
        assert_eq!(size, 92);
        let mut zeroed = h[..size].to_vec();
        zeroed[16..20].fill(0);
        assert_eq!(u32_at(h, 16), crc32(&zeroed), "header CRC");
        assert_eq!(u64_at(h, 24), lba, "my LBA");
        let last = l.disk_bytes() / SECTOR - 1;
        assert_eq!(u64_at(h, 40), 34, "first usable");
        assert_eq!(u64_at(h, 48), last - 33, "last usable");
        assert_eq!(&h[56..72], &l.disk_guid.to_bytes_le());
        let (entries, count, entry_size) = (u64_at(h, 72), u32_at(h, 80), u32_at(h, 84));
        assert_eq!((count, entry_size), (128, 128));
        let table = &d[(entries * SECTOR) as usize..][..128 * 128];
        assert_eq!(u32_at(h, 88), crc32(table), "entry array CRC");
        (entries, u64_at(h, 32))
    }

    #[test]
    fn both_headers_are_valid_and_point_at_each_other() {
        let d = disk();
        let last = layout().disk_bytes() / SECTOR - 1;
        assert_eq!(check_header(&d, 1), (2, last));
        assert_eq!(check_header(&d, last), (last - 32, 1));
    }

    #[test]
    fn the_one_partition_is_linux_root_at_1_mib_over_the_file_system() {
        let d = disk();
        let l = layout();
        let e = &d[2 * SECTOR as usize..][..128];
        assert_eq!(
            &e[0..16],
            &[
                0xe3, 0xbc, 0x68, 0x4f, 0xcd, 0xe8, 0xb1, 0x4d, 0x96, 0xe7, 0xfb, 0xca, 0xf9, 0x84,
                0xb7, 0x09
            ],
            "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709 in GPT byte order"
        );
        assert_eq!(&e[16..32], &l.partition_guid.to_bytes_le());
        assert_eq!(u64_at(e, 32), 2048);
        assert_eq!(u64_at(e, 40), 2048 + 4 * MIB / SECTOR - 1);
        let name: Vec<u16> = e[56..128]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&c| c != 0)
            .collect();
        assert_eq!(String::from_utf16(&name).unwrap(), "debian-root");
        let second = &d[2 * SECTOR as usize + 128..][..128];
        assert!(second.iter().all(|&b| b == 0), "one partition only");
        // The file system's bytes are where the partition says, untouched by the tables.
        assert_eq!(&d[MIB as usize..][..8], b"FSSTART!");
        let end = (PARTITION_OFFSET + l.fs_bytes) as usize;
        assert_eq!(&d[end - 8..end], b"FSEND!!!");
    }

    #[test]
    fn gptman_reads_back_what_was_written() {
        let mut c = Cursor::new(disk());
        let gpt = gptman::GPT::find_from(&mut c).unwrap();
        let l = layout();
        assert_eq!(gpt.header.disk_guid, l.disk_guid.to_bytes_le());
        let used: Vec<_> = gpt.iter().filter(|(_, p)| p.is_used()).collect();
        assert_eq!(used.len(), 1);
        let (n, p) = used[0];
        assert_eq!(n, 1);
        assert_eq!(p.partition_type_guid, LINUX_ROOT_X86_64.to_bytes_le());
        assert_eq!(
            gpt.get_partition_byte_range(1).unwrap(),
            PARTITION_OFFSET..=PARTITION_OFFSET + l.fs_bytes - 1
        );
    }

    #[test]
    fn the_file_system_size_adds_headroom_and_whole_mib() {
        let tree = TreeSize {
            bytes: 400 * MIB,
            inodes: 14_000,
        };
        let (mib, inodes) = fs_geometry(tree);
        let used = 400 * MIB + 14_000 * 3 / 2 * 256;
        assert!(mib * MIB >= used * 13 / 10, "{mib} MiB");
        assert!(
            mib * MIB <= used * 14 / 10 + 64 * MIB,
            "{mib} MiB is too generous"
        );
        assert!(inodes >= 21_000);
        assert_eq!(inodes, mib * MIB / INODE_RATIO);
        // A tree of many small files gets the inodes it needs, not the ratio's.
        let (_, many) = fs_geometry(TreeSize {
            bytes: 10 * MIB,
            inodes: 100_000,
        });
        assert_eq!(many, 150_000);
    }

    #[test]
    fn measure_counts_hard_links_once_and_short_symlinks_as_inodes_only() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/a"), vec![1u8; 5000]).unwrap();
        std::fs::hard_link(root.join("d/a"), root.join("b")).unwrap();
        std::os::unix::fs::symlink("d/a", root.join("l")).unwrap();
        let s = measure(root).unwrap();
        // root, d, a (once), l
        assert_eq!(s.inodes, 4);
        assert_eq!(s.bytes, 2 * BLOCK + 2 * BLOCK);
    }

    #[test]
    fn a_sparse_copy_keeps_data_at_its_offset_and_leaves_zeros_as_holes() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        let mut data = vec![0u8; 512 * 1024];
        data[100] = 7;
        data[400 * 1024] = 9;
        std::fs::write(&src, &data).unwrap();
        let dst = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(t.path().join("dst"))
            .unwrap();
        dst.set_len(MIB + data.len() as u64).unwrap();
        let written = copy_sparse(&src, &dst, MIB).unwrap();
        assert_eq!(written, 2 * 64 * 1024, "only the two chunks with data");
        let mut back = vec![0u8; data.len()];
        dst.read_exact_at(&mut back, MIB).unwrap();
        assert!(back == data);
        assert!(dst.metadata().unwrap().blocks() * 512 < 512 * 1024);
    }

    #[test]
    fn mke2fs_gets_the_label_uuid_seed_and_size() {
        let spec = Ext4Spec {
            label: "debian-root".into(),
            uuid: Uuid::from_u128(1),
            hash_seed: Uuid::from_u128(2),
            size_mib: 600,
            inodes: 40_000,
        };
        let args = mke2fs_args(&spec, Path::new("/t"), Path::new("/o/root.img")).join(" ");
        assert!(args.contains("-t ext4"), "{args}");
        assert!(args.contains("-L debian-root"), "{args}");
        assert!(
            args.contains("-U 00000000-0000-0000-0000-000000000001"),
            "{args}"
        );
        assert!(args.contains("hash_seed=00000000-0000-0000-0000-000000000002"));
        assert!(args.contains("-N 40000"), "{args}");
        assert!(args.ends_with("-d /t /o/root.img 600M"), "{args}");
    }
}
