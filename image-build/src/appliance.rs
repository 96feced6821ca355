//! The flashable frontend appliance: one raw GPT disk image (`mallee-frontend.img`) with an EFI
//! system partition holding systemd-boot and a unified kernel image per slot (A and B), and a
//! blank data partition that `mallee-init` formats on first boot. Built without root or loop
//! devices (gptman writes the partition table, fatfs the ESP) and reproducible: every GUID and
//! the FAT volume id derive from the contents, and FAT timestamps are fixed.

use crate::uefi::{self, BootFiles, UefiError, UkiParts};
use mallee_proto::appliance::{Slot, UKI_DIR};
use mallee_proto::cmdline::Key;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Cursor, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ApplianceError {
    #[error(transparent)]
    Uefi(#[from] UefiError),
    #[error("the frontend bundle {0} lacks {1}; run `just images`")]
    Bundle(String, &'static str),
    #[error(
        "the ESP of {esp_mib} MiB cannot hold {need_mib} MiB of boot files; give --esp-mib more"
    )]
    EspTooSmall { esp_mib: u64, need_mib: u64 },
    #[error("writing the ESP: {0}")]
    Fat(std::io::Error),
    #[error("writing the partition table: {0}")]
    Gpt(#[from] gptman::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The GPT partition name `mallee-init` looks for (`mallee.data=PARTLABEL=mallee-data`).
pub const DATA_PARTLABEL: &str = "mallee-data";
pub use mallee_proto::appliance::ESP_PARTLABEL;

const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;
/// GPT type of an EFI system partition.
const ESP_TYPE: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
/// GPT type of a Linux filesystem.
const LINUX_TYPE: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";

/// What the image is made of.
pub struct ApplianceSpec<'a> {
    /// The frontend bundle (`target/images/frontend`: `vmlinuz`, `initramfs`, `cmdline`).
    pub bundle: &'a Path,
    pub boot: &'a BootFiles,
    pub esp_mib: u64,
    /// The data partition as flashed; `mallee-init` grows it to the end of the disk.
    pub data_mib: u64,
    /// The version both slots carry ([`version`]); upgrades go only to newer ones.
    pub version: &'a str,
    /// Words added to each slot's kernel command line.
    pub cmdline_append: &'a str,
}

/// What was built.
#[derive(Debug)]
pub struct ApplianceReport {
    pub path: PathBuf,
    pub bytes: u64,
    pub version: String,
    /// The start of the SHA-256 of what went in: tells two builds of one version apart.
    pub build_id: String,
    pub uki_bytes: u64,
    pub esp_files: Vec<(String, u64)>,
    pub disk_guid: String,
}

/// The appliance's version: the workspace version and the source's time (seconds since the
/// epoch, the commit's), so each build of a later commit sorts after the one before it: the boot
/// manager boots the newest slot, and an upgrade must be newer than what runs.
pub fn version(source_epoch: u64) -> String {
    format!("{}.{source_epoch}", env!("CARGO_PKG_VERSION"))
}

/// The build id: the start of the SHA-256 of the kernel, initramfs and command line.
pub fn build_id(vmlinuz: &[u8], initramfs: &[u8], cmdline: &str) -> String {
    let mut h = Sha256::new();
    for part in [vmlinuz, initramfs, cmdline.as_bytes()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())[..12].to_string()
}

/// The kernel command line of a slot: the bundle's, with the data partition by label, the slot
/// named (so the running system knows which slot it booted), the admin credentials shown on the
/// console, and `append` last.
pub fn slot_cmdline(bundle_cmdline: &str, slot: Slot, append: &str) -> String {
    let kept = (bundle_cmdline.split_whitespace())
        .filter(|w| !Key::Data.is_set_by(w) && !Key::Slot.is_set_by(w));
    let mut words: Vec<String> = kept.map(str::to_string).collect();
    words.push(Key::Data.arg(format_args!("PARTLABEL={DATA_PARTLABEL}")));
    words.push(Key::Slot.arg(slot));
    // A flashed appliance has no shell: its console is where the operator reads the admin keys.
    if !words.iter().any(|w| Key::ShowCredentials.is_set_by(w)) {
        words.push(Key::ShowCredentials.arg(1));
    }
    words.extend(append.split_whitespace().map(str::to_string));
    words.join(" ")
}

fn os_release(version: &str, build_id: &str, slot: Slot) -> String {
    format!(
        "NAME=\"Mallee frontend\"\nID={}\nPRETTY_NAME=\"Mallee frontend {version} (slot {})\"\nVERSION_ID={version}\nBUILD_ID={build_id}\n",
        mallee_proto::appliance::OS_ID,
        slot.letter().to_uppercase()
    )
}

/// systemd-boot's configuration as flashed: slot A at once, no menu. The first upgrade drops
/// `default`, leaving the boot manager's own order (newest slot with tries left) to choose.
pub fn loader_conf(default_slot: Slot) -> String {
    format!(
        "default {}\n{}",
        default_slot.good_name(),
        mallee_proto::appliance::loader_conf()
    )
}

/// A GUID made from `seed` (SHA-256, RFC 4122 version 4 bits), in GPT's on-disk byte order.
fn guid(seed: &[u8], salt: &str) -> uuid::Uuid {
    let d = Sha256::new()
        .chain_update(seed)
        .chain_update(salt)
        .finalize();
    uuid::Builder::from_random_bytes(d[..16].try_into().expect("16 bytes")).into_uuid()
}

fn type_guid(text: &str) -> [u8; 16] {
    uuid::Uuid::parse_str(text).expect("constant").to_bytes_le()
}

/// Builds the image at `out`.
pub fn build(spec: &ApplianceSpec, out: &Path) -> Result<ApplianceReport, ApplianceError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| ApplianceError::Io { path, source }
    };
    let need = |name: &'static str| {
        let p = spec.bundle.join(name);
        p.exists()
            .then_some(p)
            .ok_or_else(|| ApplianceError::Bundle(spec.bundle.display().to_string(), name))
    };
    let (vmlinuz, initramfs, cmdline_file) =
        (need("vmlinuz")?, need("initramfs")?, need("cmdline")?);
    let cmdline = std::fs::read_to_string(&cmdline_file).map_err(io(&cmdline_file))?;
    let build_id = build_id(
        &std::fs::read(&vmlinuz).map_err(io(&vmlinuz))?,
        &std::fs::read(&initramfs).map_err(io(&initramfs))?,
        &format!("{} {}", cmdline.trim(), spec.cmdline_append),
    );
    let version = spec.version.to_string();
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }

    // One unified kernel image per slot: same kernel and initramfs, the slot in its cmdline.
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (
            "EFI/BOOT/BOOTX64.EFI".into(),
            std::fs::read(&spec.boot.loader).map_err(io(&spec.boot.loader))?,
        ),
        (
            "loader/loader.conf".into(),
            loader_conf(Slot::A).into_bytes(),
        ),
    ];
    let mut uki_bytes = 0;
    for slot in Slot::ALL {
        let uki = out.with_extension(format!("slot-{slot}.efi"));
        let parts = UkiParts {
            vmlinuz: &vmlinuz,
            initramfs: &initramfs,
            cmdline: &slot_cmdline(&cmdline, slot, spec.cmdline_append),
            os_release: &os_release(&version, &build_id, slot),
        };
        uki_bytes = uefi::unified_kernel_image(&spec.boot.stub, &parts, &uki)?;
        files.push((
            format!("{UKI_DIR}/{}", slot.good_name()),
            std::fs::read(&uki).map_err(io(&uki))?,
        ));
        std::fs::remove_file(&uki).map_err(io(&uki))?;
    }
    let seed: Vec<u8> = files.iter().flat_map(|(_, b)| Sha256::digest(b)).collect();

    let esp_bytes = spec.esp_mib * MIB;
    let need_mib = files
        .iter()
        .map(|(_, b)| b.len() as u64)
        .sum::<u64>()
        .div_ceil(MIB)
        + 2;
    if need_mib > spec.esp_mib {
        return Err(ApplianceError::EspTooSmall {
            esp_mib: spec.esp_mib,
            need_mib,
        });
    }
    let esp = fat_image(
        esp_bytes,
        &files,
        u32::from_le_bytes(seed[..4].try_into().unwrap()),
    )
    .map_err(ApplianceError::Fat)?;

    // 1 MiB for the protective MBR and primary GPT, the ESP, the data partition, 1 MiB for the
    // backup GPT.
    let total = MIB + esp_bytes + spec.data_mib * MIB + MIB;
    let mut disk = File::create(out).map_err(io(out))?;
    disk.set_len(total).map_err(io(out))?;
    write_sparse(&mut disk, MIB, &esp).map_err(io(out))?;
    let disk_guid = guid(&seed, "disk");
    let mut gpt = gptman::GPT::new_from(&mut disk, SECTOR, disk_guid.to_bytes_le())?;
    gpt.align = MIB / SECTOR;
    let esp_first = MIB / SECTOR;
    let data_first = esp_first + esp_bytes / SECTOR;
    gpt[1] = gptman::GPTPartitionEntry {
        partition_type_guid: type_guid(ESP_TYPE),
        unique_partition_guid: guid(&seed, "esp").to_bytes_le(),
        starting_lba: esp_first,
        ending_lba: data_first - 1,
        attribute_bits: 0,
        partition_name: ESP_PARTLABEL.into(),
    };
    gpt[2] = gptman::GPTPartitionEntry {
        partition_type_guid: type_guid(LINUX_TYPE),
        unique_partition_guid: guid(&seed, "data").to_bytes_le(),
        starting_lba: data_first,
        ending_lba: data_first + spec.data_mib * MIB / SECTOR - 1,
        attribute_bits: 0,
        partition_name: DATA_PARTLABEL.into(),
    };
    gpt.write_into(&mut disk)?;
    gptman::GPT::write_protective_mbr_into(&mut disk, SECTOR)?;
    disk.sync_all().map_err(io(out))?;
    Ok(ApplianceReport {
        path: out.to_path_buf(),
        bytes: total,
        version,
        build_id,
        uki_bytes,
        esp_files: files
            .iter()
            .map(|(n, b)| (n.clone(), b.len() as u64))
            .collect(),
        disk_guid: disk_guid.to_string(),
    })
}

/// A FAT32 file system of `bytes` holding `files` (paths with `/`, directories made as needed).
fn fat_image(bytes: u64, files: &[(String, Vec<u8>)], volume_id: u32) -> std::io::Result<Vec<u8>> {
    let mut cursor = Cursor::new(vec![0u8; bytes as usize]);
    fatfs::format_volume(
        &mut cursor,
        fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat32)
            .volume_id(volume_id)
            .volume_label(*b"MALLEE-ESP "),
    )?;
    cursor.set_position(0);
    {
        let fs = fatfs::FileSystem::new(&mut cursor, mallee_proto::appliance::fat_options())?;
        for (path, data) in files {
            let root = fs.root_dir();
            let (dirs, name) = path.rsplit_once('/').unwrap_or(("", path));
            let mut dir = root;
            for part in dirs.split('/').filter(|p| !p.is_empty()) {
                dir = match dir.open_dir(part) {
                    Ok(d) => d,
                    Err(_) => dir.create_dir(part)?,
                };
            }
            let mut file = dir.create_file(name)?;
            file.truncate()?;
            file.write_all(data)?;
        }
        fs.unmount()?;
    }
    Ok(cursor.into_inner())
}

/// Writes `data` at `offset`, seeking over whole zero blocks so the file stays sparse.
fn write_sparse(file: &mut File, offset: u64, data: &[u8]) -> std::io::Result<()> {
    const BLOCK: usize = 64 << 10;
    for (i, chunk) in data.chunks(BLOCK).enumerate() {
        if chunk.iter().any(|&b| b != 0) {
            file.seek(SeekFrom::Start(offset + (i * BLOCK) as u64))?;
            file.write_all(chunk)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_cmdline_names_the_partition_and_slot_once() {
        let c = slot_cmdline(
            "console=ttyS0 mallee.role=frontend mallee.data=/dev/vda",
            Slot::B,
            "quiet",
        );
        assert_eq!(
            c,
            "console=ttyS0 mallee.role=frontend mallee.data=PARTLABEL=mallee-data mallee.slot=b \
             mallee.show_credentials=1 quiet"
        );
    }

    #[test]
    fn build_ids_differ_with_contents_and_versions_with_time() {
        assert_ne!(build_id(b"k", b"i", "c"), build_id(b"k", b"i", "d"));
        assert_eq!(build_id(b"k", b"i", "c"), build_id(b"k", b"i", "c"));
        assert!(version(1_764_860_000).starts_with(env!("CARGO_PKG_VERSION")));
        assert_eq!(
            mallee_proto::appliance::version_cmp(&version(1_764_860_001), &version(1_764_860_000)),
            std::cmp::Ordering::Greater
        );
    }

    #[test]
    fn fat_image_holds_the_files() {
        let files = vec![
            ("EFI/BOOT/BOOTX64.EFI".to_string(), vec![7u8; 5000]),
            (
                "loader/loader.conf".to_string(),
                loader_conf(Slot::A).into_bytes(),
            ),
        ];
        let img = fat_image(64 * MIB, &files, 42).unwrap();
        assert_eq!(
            img,
            fat_image(64 * MIB, &files, 42).unwrap(),
            "not reproducible"
        );
        let fs = fatfs::FileSystem::new(Cursor::new(img), fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
        let mut back = Vec::new();
        let mut f = fs.root_dir().open_file("EFI/BOOT/BOOTX64.EFI").unwrap();
        std::io::Read::read_to_end(&mut f, &mut back).unwrap();
        assert_eq!(back, vec![7u8; 5000]);
    }
}
