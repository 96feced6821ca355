//! The flashable frontend appliance's A/B slots, as the image builder writes them, `mallee-init`
//! boots and marks them and the daemon stages upgrades: slot file names with systemd-boot's boot
//! counters, the os-release and command line a unified kernel image carries, version order, the
//! EFI system partition of an image file or a disk, and the records init and daemon share.
//!
//! Which slot boots is systemd-boot's own entry order (its `boot_entry_compare`): entries with no
//! tries left sort last, then the newest version first. So an upgrade writes the new image into
//! the slot that is not running as `mallee-X+3.efi` with a higher version: it boots first while it
//! has tries, systemd-boot counts each try in the name (`+2-1`, `+1-2`, `+0-3`), `mallee-init`
//! renames it to `mallee-X.efi` once the daemon serves, and one that used up its tries sorts
//! last, so the old slot boots again by itself.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Where the unified kernel images live on the ESP (systemd-boot's type #2 entries).
pub const UKI_DIR: &str = "EFI/Linux";
/// systemd-boot's configuration file on the ESP.
pub const LOADER_CONF: &str = "loader/loader.conf";
/// The GPT name of the EFI system partition of the flashable image.
pub const ESP_PARTLABEL: &str = "mallee-esp";
/// Site settings an operator adds after flashing, at the ESP's root (FAT: any computer can mount
/// it and edit the file): TOML laid over the frontend's written configuration, key by key.
pub const SITE_CONFIG: &str = "mallee.toml";
/// The `ID=` of the appliance's os-release: an image without it is not ours.
pub const OS_ID: &str = "mallee";
/// Exit status of `mallee-frontend` that tells `mallee-init` an upgrade is staged: install it
/// into the inactive slot and reboot.
pub const UPGRADE_STAGED_EXIT: i32 = 75;
/// Tries a new slot gets unless the admin asks for another number.
pub const DEFAULT_TRIES: u32 = 3;
/// The most tries an admin may ask for.
pub const MAX_TRIES: u32 = 9;
/// The status file `mallee-init` writes in the appliance directory each boot.
pub const STATUS_FILE: &str = "status.json";
/// The upgrade request the daemon stages in the appliance directory.
pub const STAGED_FILE: &str = "staged.json";

#[derive(Debug, thiserror::Error)]
pub enum ApplianceError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}: no GPT partition table")]
    NoGpt(String),
    #[error("{0}: no EFI system partition named {ESP_PARTLABEL}; is it a Mallee frontend image?")]
    NoEsp(String),
    #[error("{0}: not a unified kernel image ({1})")]
    NotUki(String, String),
    #[error("{0}: its os-release says ID={1}, not {OS_ID}: not a Mallee frontend image")]
    NotOurs(String, String),
    #[error("{0}: its os-release has no VERSION_ID")]
    NoVersion(String),
}

fn io_err(what: impl fmt::Display) -> impl FnOnce(io::Error) -> ApplianceError {
    let what = what.to_string();
    move |source| ApplianceError::Io { what, source }
}

/// One of the two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    pub fn letter(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "a" | "A" => Some(Slot::A),
            "b" | "B" => Some(Slot::B),
            _ => None,
        }
    }

    /// The slot's file name with no boot counter (a slot that has proved itself).
    pub fn good_name(self) -> String {
        format!("mallee-{}.efi", self.letter())
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.letter())
    }
}

/// systemd-boot's boot counter in a file name: `+LEFT[-DONE]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tries {
    pub left: u32,
    pub done: u32,
}

/// A slot's unified kernel image as named on the ESP: `mallee-b.efi`, `mallee-b+3.efi`,
/// `mallee-b+1-2.efi`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotFile {
    pub slot: Slot,
    /// `None`: proved good (or never counted).
    pub tries: Option<Tries>,
}

impl SlotFile {
    /// Parses a file name (case-insensitive, as FAT is); `None` for anything else.
    pub fn parse(name: &str) -> Option<SlotFile> {
        let lower = name.to_ascii_lowercase();
        let stem = lower.strip_suffix(".efi")?.strip_prefix("mallee-")?;
        let (slot, counter) = match stem.split_once('+') {
            Some((s, c)) => (s, Some(c)),
            None => (stem, None),
        };
        let slot = Slot::parse(slot)?;
        let number = |s: &str| {
            (!s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u32>().ok())
                .flatten()
        };
        let tries = match counter {
            None => None,
            Some(c) => {
                let (left, done) = match c.split_once('-') {
                    Some((l, d)) => (number(l)?, number(d)?),
                    None => (number(c)?, 0),
                };
                Some(Tries { left, done })
            }
        };
        Some(SlotFile { slot, tries })
    }

    /// The name as written on the ESP.
    pub fn name(&self) -> String {
        match self.tries {
            None => self.slot.good_name(),
            Some(Tries { left, done: 0 }) => format!("mallee-{}+{left}.efi", self.slot),
            Some(Tries { left, done }) => format!("mallee-{}+{left}-{done}.efi", self.slot),
        }
    }

    /// Still being tried (a counter with tries left).
    pub fn trying(&self) -> bool {
        matches!(self.tries, Some(t) if t.left > 0)
    }

    /// Used up its tries without being marked good.
    pub fn failed(&self) -> bool {
        matches!(self.tries, Some(t) if t.left == 0)
    }
}

/// The fields of an os-release file the appliance uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    pub id: String,
    pub version_id: String,
    pub build_id: String,
}

impl OsRelease {
    /// Parses `KEY=value` lines (values optionally quoted).
    pub fn parse(text: &str) -> OsRelease {
        let mut os = OsRelease::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"').to_string();
            match key.trim() {
                "ID" => os.id = value,
                "VERSION_ID" => os.version_id = value,
                "BUILD_ID" => os.build_id = value,
                _ => {}
            }
        }
        os
    }
}

/// Version order as systemd-boot sorts our versions (`0.1.0.1764860000`, `...0000.1`): dot
/// separated parts, numbers compared as numbers, other parts as text, a longer version newer
/// than its own prefix.
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    let mut x = a.split('.');
    let mut y = b.split('.');
    loop {
        match (x.next(), y.next()) {
            (None, None) => return Ordering::Equal,
            (Some(_), None) => return Ordering::Greater,
            (None, Some(_)) => return Ordering::Less,
            (Some(p), Some(q)) => {
                let order = match (p.parse::<u64>(), q.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    _ => p.cmp(q),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

/// What a unified kernel image says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uki {
    pub os_release: OsRelease,
    pub cmdline: String,
}

impl Uki {
    /// Reads the `.osrel` and `.cmdline` sections of `bytes` (named `what` in errors) and checks
    /// it is one of ours with a version.
    pub fn parse(what: &str, bytes: &[u8]) -> Result<Uki, ApplianceError> {
        use object::{Object, ObjectSection};
        let not_uki = |why: String| ApplianceError::NotUki(what.into(), why);
        let pe = object::read::pe::PeFile64::parse(bytes).map_err(|e| not_uki(e.to_string()))?;
        let section = |name: &str| -> Result<String, ApplianceError> {
            let s = (pe.section_by_name(name)).ok_or_else(|| not_uki(format!("no {name}")))?;
            let data = s.data().map_err(|e| not_uki(format!("{name}: {e}")))?;
            let text = String::from_utf8_lossy(data);
            Ok(text.trim_end_matches('\0').trim().to_string())
        };
        let os_release = OsRelease::parse(&section(".osrel")?);
        if os_release.id != OS_ID {
            return Err(ApplianceError::NotOurs(what.into(), os_release.id));
        }
        if os_release.version_id.is_empty() {
            return Err(ApplianceError::NoVersion(what.into()));
        }
        Ok(Uki {
            os_release,
            cmdline: section(".cmdline")?,
        })
    }

    /// The slot its command line names (`mallee.slot=`).
    pub fn slot(&self) -> Option<Slot> {
        let key = crate::cmdline::Key::Slot;
        (self.cmdline.split_whitespace()).find_map(|w| Slot::parse(key.value_in(w)?))
    }
}

/// A slot's unified kernel image as found on an ESP.
pub struct SlotImage {
    pub file: SlotFile,
    pub uki: Uki,
    pub bytes: Vec<u8>,
}

/// Writes `bytes` as `dir/name` so that no reader ever sees half of it (a temporary file,
/// fsync, rename), readable by every user: the records init and the daemon hand each other.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, dir.join(name))
}

/// A window of a file: the ESP inside a disk image or a disk.
pub struct Slice<T> {
    inner: T,
    start: u64,
    len: u64,
    pos: u64,
}

impl<T: Seek> Slice<T> {
    fn at(&mut self) -> io::Result<u64> {
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        Ok(self.len.saturating_sub(self.pos))
    }
}

impl<T: Read + Seek> Read for Slice<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = self.at()?;
        let n = buf.len().min(room as usize);
        let n = self.inner.read(&mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<T: Write + Seek> Write for Slice<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.at()?;
        if room == 0 && !buf.is_empty() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "end of partition"));
        }
        let n = buf.len().min(room as usize);
        let n = self.inner.write(&buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T> Seek for Slice<T> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(self.pos)
    }
}

/// The time stamp on every file the appliance writes on its ESP: a fixed, valid DOS time
/// (1980-01-01 00:00), so builds are reproducible. fatfs's own default without a clock is
/// month 0, day 0, which UEFI's FAT driver refuses in `SetInfo` (EFI_INVALID_PARAMETER): the
/// boot manager could then not count a try by renaming the file.
#[derive(Debug)]
pub struct FixedTime;

impl fatfs::TimeProvider for FixedTime {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs::Date {
            year: 1980,
            month: 1,
            day: 1,
        }
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: self.get_current_date(),
            time: fatfs::Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

/// Mount options for an appliance ESP: [`FixedTime`] stamps.
pub fn fat_options() -> fatfs::FsOptions {
    static TIME: FixedTime = FixedTime;
    fatfs::FsOptions::new().time_provider(&TIME)
}

/// The FAT file system of an appliance ESP.
pub struct Esp {
    what: String,
    fs: fatfs::FileSystem<Slice<File>>,
}

impl Esp {
    /// The ESP inside a whole disk or disk image file (found by its GPT name).
    pub fn in_image(path: &Path, writable: bool) -> Result<Esp, ApplianceError> {
        let what = path.display().to_string();
        let mut file = open(path, writable)?;
        let gpt =
            gptman::GPT::find_from(&mut file).map_err(|_| ApplianceError::NoGpt(what.clone()))?;
        let (_, part) = (gpt.iter())
            .find(|(_, p)| p.is_used() && p.partition_name.as_str() == ESP_PARTLABEL)
            .ok_or_else(|| ApplianceError::NoEsp(what.clone()))?;
        let start = part.starting_lba * gpt.sector_size;
        let len = (part.ending_lba + 1 - part.starting_lba) * gpt.sector_size;
        Esp::mount(what, file, start, len)
    }

    /// An ESP that is a block device or file of its own (`/dev/vda1`).
    pub fn partition(path: &Path, writable: bool) -> Result<Esp, ApplianceError> {
        let what = path.display().to_string();
        let mut file = open(path, writable)?;
        let len = file.seek(SeekFrom::End(0)).map_err(io_err(&what))?;
        Esp::mount(what, file, 0, len)
    }

    fn mount(what: String, inner: File, start: u64, len: u64) -> Result<Esp, ApplianceError> {
        let slice = Slice {
            inner,
            start,
            len,
            pos: 0,
        };
        let fs = fatfs::FileSystem::new(slice, fat_options())
            .map_err(io_err(format!("{what}: the ESP's FAT file system")))?;
        Ok(Esp { what, fs })
    }

    fn err(&self, doing: impl fmt::Display) -> impl FnOnce(io::Error) -> ApplianceError {
        io_err(format!("{}: {doing}", self.what))
    }

    /// Every slot file under `EFI/Linux/`, with its exact name.
    pub fn slot_files(&self) -> Result<Vec<(String, SlotFile)>, ApplianceError> {
        let dir = (self.fs.root_dir().open_dir(UKI_DIR)).map_err(self.err(UKI_DIR))?;
        let mut out = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(self.err(UKI_DIR))?;
            let name = entry.file_name();
            if let Some(f) = SlotFile::parse(&name) {
                out.push((name, f));
            }
        }
        out.sort_by_key(|(_, f)| f.slot.letter());
        Ok(out)
    }

    /// The file of `slot`, if it has one.
    pub fn slot_file(&self, slot: Slot) -> Result<Option<(String, SlotFile)>, ApplianceError> {
        Ok(self.slot_files()?.into_iter().find(|(_, f)| f.slot == slot))
    }

    /// A whole file (path with `/`).
    pub fn read(&self, path: &str) -> Result<Vec<u8>, ApplianceError> {
        let mut f = (self.fs.root_dir().open_file(path)).map_err(self.err(path))?;
        let mut out = Vec::new();
        f.read_to_end(&mut out).map_err(self.err(path))?;
        Ok(out)
    }

    /// The unified kernel image of `slot`, read once and parsed; `None` when the slot is empty.
    pub fn slot_image(&self, slot: Slot) -> Result<Option<SlotImage>, ApplianceError> {
        let Some((name, file)) = self.slot_file(slot)? else {
            return Ok(None);
        };
        let path = format!("{UKI_DIR}/{name}");
        let bytes = self.read(&path)?;
        let uki = Uki::parse(&format!("{}: {path}", self.what), &bytes)?;
        Ok(Some(SlotImage { file, uki, bytes }))
    }

    /// Writes `bytes` as `path`, replacing it: into a temporary name first, then renamed, so a
    /// power cut leaves either the old file or the new one (or no slot file), never half of one
    /// under a name the boot manager uses.
    pub fn write(&self, path: &str, bytes: &[u8]) -> Result<(), ApplianceError> {
        let root = self.fs.root_dir();
        let tmp = format!("{path}.new");
        {
            let mut f = root.create_file(&tmp).map_err(self.err(&tmp))?;
            f.truncate().map_err(self.err(&tmp))?;
            f.write_all(bytes).map_err(self.err(&tmp))?;
            f.flush().map_err(self.err(&tmp))?;
        }
        if root.open_file(path).is_ok() {
            root.remove(path).map_err(self.err(path))?;
        }
        root.rename(&tmp, &root, path).map_err(self.err(path))
    }

    /// Installs `uki` as `slot` with `tries` boot tries: every old file of the slot is removed
    /// first (the other slot, the one running, is never touched).
    pub fn install(&self, slot: Slot, uki: &[u8], tries: u32) -> Result<String, ApplianceError> {
        let root = self.fs.root_dir();
        for (name, _) in self
            .slot_files()?
            .into_iter()
            .filter(|(_, f)| f.slot == slot)
        {
            let path = format!("{UKI_DIR}/{name}");
            root.remove(&path).map_err(self.err(&path))?;
        }
        let file = SlotFile {
            slot,
            tries: Some(Tries {
                left: tries,
                done: 0,
            }),
        };
        self.write(&format!("{UKI_DIR}/{}", file.name()), uki)?;
        Ok(file.name())
    }

    /// Drops the boot counter of `slot`'s file: it has proved itself.
    pub fn mark_good(&self, slot: Slot) -> Result<(), ApplianceError> {
        let Some((name, file)) = self.slot_file(slot)? else {
            return Ok(());
        };
        if file.tries.is_none() {
            return Ok(());
        }
        let root = self.fs.root_dir();
        let (from, to) = (
            format!("{UKI_DIR}/{name}"),
            format!("{UKI_DIR}/{}", slot.good_name()),
        );
        root.rename(&from, &root, &to).map_err(self.err(&from))
    }

    /// Flushes and closes the file system.
    pub fn close(self) -> Result<(), ApplianceError> {
        let what = self.what.clone();
        self.fs
            .unmount()
            .map_err(io_err(format!("{what}: unmounting")))
    }
}

fn open(path: &Path, writable: bool) -> Result<File, ApplianceError> {
    OpenOptions::new()
        .read(true)
        .write(writable)
        .open(path)
        .map_err(io_err(path.display()))
}

/// systemd-boot's configuration: no menu, and no `default`, so the boot manager's own order
/// picks the slot (newest version with tries left first).
pub fn loader_conf() -> String {
    "timeout 0\neditor no\n".to_string()
}

/// What a slot holds, for the admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotStatus {
    pub slot: Slot,
    /// Empty when the slot holds no image.
    pub version: String,
    /// `good`, `trying` (tries left), `failed` (tries used up) or `empty`.
    pub state: String,
}

/// How the last upgrade went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeRecord {
    pub slot: Slot,
    pub version: String,
    pub tries: u32,
    /// `trying`, `good` or `failed`.
    pub result: String,
    pub detail: String,
    /// Milliseconds since the epoch of the last change.
    pub at_ms: u64,
}

/// What `mallee-init` writes into the appliance directory each boot, for `DescribeAppliance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplianceStatus {
    /// The slot running now.
    pub slot: Slot,
    pub version: String,
    pub build: String,
    pub slots: Vec<SlotStatus>,
    pub last_upgrade: Option<UpgradeRecord>,
}

/// The upgrade the daemon staged for `mallee-init` to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedUpgrade {
    pub slot: Slot,
    pub version: String,
    pub tries: u32,
    /// The unified kernel image's file name inside the appliance directory.
    pub file: String,
}

#[cfg(test)]
#[path = "appliance_tests.rs"]
mod tests;
