//! cpio "newc" archive writer: the format the Linux kernel unpacks as an initramfs.
//!
//! Owns the byte layout only (110-byte ASCII headers, 4-byte alignment, the `TRAILER!!!` entry).
//! What goes into the archive, and in which order, is `initramfs`'s business; this writer emits
//! entries exactly as it is given them, so the same entries always give the same bytes.

use std::io::{self, Write};

/// What kind of file an entry is, with what the kind needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    File(Vec<u8>),
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

/// One archive member. Ownership is always root (uid/gid 0) and the mtime is fixed, which is
/// what makes archives reproducible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the archive, without a leading `/` (`init`, `lib/modules`).
    pub path: String,
    /// Permission bits (`0o755`); the file-type bits come from `kind`.
    pub perm: u32,
    pub kind: EntryKind,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const TRAILER: &str = "TRAILER!!!";

/// Writes newc entries to `out`, numbering inodes in order so the output depends only on input.
pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            next_ino: 1,
            written: 0,
        }
    }

    /// Appends one entry.
    pub fn append(&mut self, entry: &Entry) -> io::Result<()> {
        let (type_bits, data, rdev, nlink): (u32, &[u8], (u32, u32), u32) = match &entry.kind {
            EntryKind::Directory => (S_IFDIR, &[], (0, 0), 2),
            EntryKind::File(bytes) => (S_IFREG, bytes, (0, 0), 1),
            EntryKind::Symlink(target) => (S_IFLNK, target.as_bytes(), (0, 0), 1),
            EntryKind::CharDevice { major, minor } => (S_IFCHR, &[], (*major, *minor), 1),
        };
        let ino = self.next_ino;
        self.next_ino += 1;
        self.header(
            ino,
            type_bits | (entry.perm & 0o7777),
            nlink,
            data.len(),
            rdev,
            &entry.path,
        )?;
        self.write_padded(data)
    }

    /// Writes the trailer and returns the sink and the archive's length in bytes.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.header(0, 0, 1, 0, (0, 0), TRAILER)?;
        Ok((self.out, self.written))
    }

    fn header(
        &mut self,
        ino: u32,
        mode: u32,
        nlink: u32,
        size: usize,
        rdev: (u32, u32),
        name: &str,
    ) -> io::Result<()> {
        let size = u32::try_from(size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cpio member over 4 GiB"))?;
        let namesize = name.len() as u32 + 1;
        // Fields: ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor
        // namesize check. uid, gid, mtime and dev are fixed at zero.
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        let mut header = String::with_capacity(110);
        header.push_str("070701");
        for f in fields {
            header.push_str(&format!("{f:08X}"));
        }
        self.write_raw(header.as_bytes())?;
        let mut name_bytes = name.as_bytes().to_vec();
        name_bytes.push(0);
        self.write_padded(&name_bytes)
    }

    fn write_padded(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_raw(bytes)?;
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.write_raw(&[0u8; 3][..pad])
    }

    fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[Entry]) -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        for e in entries {
            w.append(e).unwrap();
        }
        w.finish().unwrap().0
    }

    #[test]
    fn file_entry_has_newc_header_and_alignment() {
        let bytes = archive(&[Entry {
            path: "init".into(),
            perm: 0o755,
            kind: EntryKind::File(b"hello".to_vec()),
        }]);
        let header = std::str::from_utf8(&bytes[..110]).unwrap();
        assert!(header.starts_with("070701"));
        // mode field: regular file, 0755.
        assert_eq!(&header[14..22], "000081ED");
        // filesize field.
        assert_eq!(&header[54..62], "00000005");
        // namesize includes the NUL.
        assert_eq!(&header[94..102], "00000005");
        // name "init\0" lands at 110..115, padded to 116; data at 116.
        assert_eq!(&bytes[110..115], b"init\0");
        assert_eq!(&bytes[116..121], b"hello");
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes
            .windows(TRAILER.len())
            .any(|w| w == TRAILER.as_bytes()));
    }

    #[test]
    fn char_device_records_rdev() {
        let bytes = archive(&[Entry {
            path: "dev/console".into(),
            perm: 0o600,
            kind: EntryKind::CharDevice { major: 5, minor: 1 },
        }]);
        let header = std::str::from_utf8(&bytes[..110]).unwrap();
        assert_eq!(&header[14..22], "00002180");
        assert_eq!(&header[78..86], "00000005");
        assert_eq!(&header[86..94], "00000001");
    }

    #[test]
    fn same_entries_give_same_bytes() {
        let entries = [
            Entry {
                path: "bin".into(),
                perm: 0o755,
                kind: EntryKind::Directory,
            },
            Entry {
                path: "bin/sh".into(),
                perm: 0o777,
                kind: EntryKind::Symlink("../init".into()),
            },
        ];
        assert_eq!(archive(&entries), archive(&entries));
    }

    /// The archive must unpack with a real cpio implementation (Debian's GNU cpio) when present.
    #[test]
    fn gnu_cpio_lists_what_we_wrote() {
        let Ok(which) = std::process::Command::new("cpio").arg("--version").output() else {
            panic!("GNU cpio is missing: run `just setup`");
        };
        assert!(which.status.success());
        let bytes = archive(&[
            Entry {
                path: "etc".into(),
                perm: 0o755,
                kind: EntryKind::Directory,
            },
            Entry {
                path: "etc/hostname".into(),
                perm: 0o644,
                kind: EntryKind::File(b"node\n".to_vec()),
            },
        ]);
        let mut child = std::process::Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "etc\netc/hostname\n"
        );
    }
}
