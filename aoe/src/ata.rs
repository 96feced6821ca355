//! ATA semantics shared by both ends: command opcodes, status and error bits, and the
//! IDENTIFY DEVICE page (built by the target, read by the initiator for the capacity).

pub const CMD_READ: u8 = 0x20;
pub const CMD_READ_EXT: u8 = 0x24;
pub const CMD_WRITE: u8 = 0x30;
pub const CMD_WRITE_EXT: u8 = 0x34;
pub const CMD_CHECK_POWER_MODE: u8 = 0xe5;
pub const CMD_FLUSH: u8 = 0xe7;
pub const CMD_FLUSH_EXT: u8 = 0xea;
pub const CMD_IDENTIFY: u8 = 0xec;

/// Status register: device ready.
pub const STATUS_DRDY: u8 = 0x40;
/// Status register: device fault.
pub const STATUS_DF: u8 = 0x20;
/// Status register: error (see the error register).
pub const STATUS_ERR: u8 = 0x01;
/// Error register: command aborted.
pub const ERROR_ABRT: u8 = 0x04;
/// Error register: address not found.
pub const ERROR_IDNF: u8 = 0x10;
/// Error register: uncorrectable data error.
pub const ERROR_UNC: u8 = 0x40;
/// Sector count CHECK POWER MODE returns for "active or idle".
pub const POWER_ACTIVE: u8 = 0xff;

pub const SECTOR_SIZE: usize = 512;
/// Highest LBA a 28-bit command can address.
pub const LBA28_LIMIT: u64 = 0x0fff_ffff;

/// The strings and sizes an IDENTIFY DEVICE page reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub sectors: u64,
    pub serial: String,
    pub firmware: String,
    pub model: String,
    /// Sectors per frame the target accepts (IDENTIFY word 47).
    pub max_sectors: u8,
}

/// Writes an ATA string: space-padded, two characters per word, high byte first.
fn put_string(page: &mut [u8; 512], word: usize, words: usize, s: &str) {
    let mut chars = s.bytes().chain(std::iter::repeat(b' ')).take(words * 2);
    for w in word..word + words {
        let hi = chars.next().unwrap_or(b' ');
        let lo = chars.next().unwrap_or(b' ');
        page[2 * w] = lo;
        page[2 * w + 1] = hi;
    }
}

fn put_word(page: &mut [u8; 512], word: usize, v: u16) {
    page[2 * word..2 * word + 2].copy_from_slice(&v.to_le_bytes());
}

fn word(page: &[u8], w: usize) -> u16 {
    u16::from_le_bytes([page[2 * w], page[2 * w + 1]])
}

impl Identity {
    /// The 512-byte IDENTIFY DEVICE page: LBA and LBA48 supported and enabled, FLUSH CACHE
    /// (EXT) supported, 28-bit capacity saturated and the 48-bit capacity in words 100..=103.
    pub fn page(&self) -> [u8; 512] {
        let mut page = [0u8; 512];
        put_word(&mut page, 0, 0x0040); // fixed device
                                        // Legacy CHS geometry (16 heads, 63 sectors/track), as vblade reports it.
        let cyl = (self.sectors / (16 * 63)).min(16383) as u16;
        put_word(&mut page, 1, cyl);
        put_word(&mut page, 3, 16);
        put_word(&mut page, 6, 63);
        put_string(&mut page, 10, 10, &self.serial);
        put_string(&mut page, 23, 4, &self.firmware);
        put_string(&mut page, 27, 20, &self.model);
        put_word(&mut page, 47, 0x8000 | u16::from(self.max_sectors));
        put_word(&mut page, 49, 0x0200); // LBA supported
        put_word(&mut page, 53, 0x0006);
        let lba28 = self.sectors.min(LBA28_LIMIT) as u32;
        put_word(&mut page, 60, lba28 as u16);
        put_word(&mut page, 61, (lba28 >> 16) as u16);
        put_word(&mut page, 80, 0x00f0); // ATA-4..7
        put_word(&mut page, 82, 0x4000);
        put_word(&mut page, 83, 0x7400); // LBA48, FLUSH CACHE, FLUSH CACHE EXT
        put_word(&mut page, 84, 0x4000);
        put_word(&mut page, 85, 0x4000);
        put_word(&mut page, 86, 0x3400);
        put_word(&mut page, 87, 0x4000);
        for i in 0..4 {
            put_word(&mut page, 100 + i, (self.sectors >> (16 * i)) as u16);
        }
        page
    }
}

/// Capacity in sectors from an IDENTIFY page: the LBA48 words when word 83 says LBA48 is
/// supported, else the 28-bit words. `None` if the page is shorter than 512 bytes.
pub fn identify_sectors(page: &[u8]) -> Option<u64> {
    if page.len() < 512 {
        return None;
    }
    if word(page, 83) & 0x0400 != 0 {
        Some((0..4).fold(0u64, |acc, i| {
            acc | (u64::from(word(page, 100 + i)) << (16 * i))
        }))
    } else {
        Some(u64::from(word(page, 60)) | (u64::from(word(page, 61)) << 16))
    }
}

/// The model string of an IDENTIFY page (trailing spaces trimmed).
pub fn identify_model(page: &[u8]) -> Option<String> {
    let raw = page.get(54..94)?;
    let s: Vec<u8> = raw.chunks_exact(2).flat_map(|c| [c[1], c[0]]).collect();
    Some(String::from_utf8_lossy(&s).trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vblade_identify_page() -> Vec<u8> {
        let hex = include_str!("wire/testdata/vblade-identify.resp.hex").trim();
        let frame: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        frame[36..36 + 512].to_vec()
    }

    #[test]
    fn vblade_identify_page_gives_the_1_mib_backing_file_size() {
        let page = vblade_identify_page();
        assert_eq!(identify_sectors(&page), Some(2048));
        assert_eq!(
            identify_model(&page).as_deref(),
            Some("Coraid EtherDrive vblade")
        );
    }

    #[test]
    fn our_identify_page_round_trips_lba48_capacity_and_model() {
        let id = Identity {
            sectors: (1 << 40) + 5,
            serial: "S1".into(),
            firmware: "1".into(),
            model: "Mallee AoE".into(),
            max_sectors: 17,
        };
        let page = id.page();
        assert_eq!(identify_sectors(&page), Some((1 << 40) + 5));
        assert_eq!(identify_model(&page).as_deref(), Some("Mallee AoE"));
        assert_eq!(u16::from_le_bytes([page[120], page[121]]), 0xffff);
    }

    #[test]
    fn short_identify_page_is_none() {
        assert_eq!(identify_sectors(&[0u8; 100]), None);
    }
}
