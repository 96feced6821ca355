use super::*;
use std::io::Write;

/// A 64-bit x86 ELF executable's header and a compressible body (x86 call opcodes in it, for
/// the BCJ filter to turn).
fn elf() -> Vec<u8> {
    let mut e = vec![0u8; 64];
    e[..4].copy_from_slice(b"\x7fELF");
    e[4] = 2;
    e[5] = 1;
    e[16..18].copy_from_slice(&2u16.to_le_bytes());
    e[18..20].copy_from_slice(&0x3eu16.to_le_bytes());
    for i in 0..50_000u32 {
        e.extend_from_slice(&[0xe8, (i % 251) as u8, 0, 0, 0, b'k']);
    }
    e
}

fn with_trailer(mut compressed: Vec<u8>, unpacked: usize) -> Vec<u8> {
    compressed.extend_from_slice(&(unpacked as u32).to_le_bytes());
    compressed
}

/// A bzImage (boot protocol 2.15, four setup sectors) carrying `payload` 0x100 bytes into its
/// protected-mode part.
fn bzimage(payload: &[u8]) -> Vec<u8> {
    let mut bz = vec![0u8; 5 * 512 + 0x100];
    bz[SETUP_SECTS] = 4;
    bz[HEADER_MAGIC..HEADER_MAGIC + 4].copy_from_slice(b"HdrS");
    bz[VERSION..VERSION + 2].copy_from_slice(&0x020fu16.to_le_bytes());
    bz[PAYLOAD_OFFSET..PAYLOAD_OFFSET + 4].copy_from_slice(&0x100u32.to_le_bytes());
    bz[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    bz.extend_from_slice(payload);
    bz
}

/// As the kernel build compresses: xz with the x86 BCJ filter and CRC32.
fn xz(data: &[u8]) -> Vec<u8> {
    let mut options = lzma_rust2::XzOptions::with_preset(6);
    options.prepend_pre_filter(lzma_rust2::FilterType::BcjX86, 0);
    let mut w = lzma_rust2::XzWriter::new(Vec::new(), options).unwrap();
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

/// `lz4 -l`: the legacy magic, then length-prefixed blocks of at most 8 MiB unpacked.
fn lz4_legacy(data: &[u8]) -> Vec<u8> {
    let mut out = 0x184c_2102u32.to_le_bytes().to_vec();
    for chunk in data.chunks(8 << 20) {
        let block = lz4_flex::block::compress(chunk);
        out.extend_from_slice(&(block.len() as u32).to_le_bytes());
        out.extend_from_slice(&block);
    }
    out
}

#[test]
fn xz_gzip_and_lz4_payloads_unpack_to_the_elf_they_carry() {
    let e = elf();
    for (name, compressed) in [("xz", xz(&e)), ("gzip", gzip(&e)), ("lz4", lz4_legacy(&e))] {
        let bz = bzimage(&with_trailer(compressed, e.len()));
        assert_eq!(unpack(&bz).unwrap(), e, "{name}");
    }
}

#[test]
fn a_payload_unpacking_to_another_size_than_its_trailer_says_is_refused() {
    let e = elf();
    let bz = bzimage(&with_trailer(gzip(&e), e.len() + 1));
    assert!(matches!(unpack(&bz), Err(UnpackError::WrongSize { .. })));
}

#[test]
fn a_payload_that_is_not_an_x86_64_executable_is_refused() {
    let mut e = elf();
    e[18] = 0xb7; // aarch64
    let bz = bzimage(&with_trailer(gzip(&e), e.len()));
    assert!(matches!(unpack(&bz), Err(UnpackError::NotElf)));
}

#[test]
fn other_formats_and_bad_headers_are_errors_that_say_which() {
    let zstd = bzimage(&[0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3, 4, 5]);
    assert!(matches!(
        unpack(&zstd),
        Err(UnpackError::Unsupported("zstd"))
    ));
    assert!(matches!(
        unpack(b"MZ not a kernel"),
        Err(UnpackError::NotBzImage)
    ));
    let mut old = bzimage(&[1, 2, 3]);
    old[VERSION..VERSION + 2].copy_from_slice(&0x0206u16.to_le_bytes());
    assert!(matches!(
        unpack(&old),
        Err(UnpackError::OldProtocol(0x0206))
    ));
    let mut outside = bzimage(&[1, 2, 3]);
    outside[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        unpack(&outside),
        Err(UnpackError::PayloadOutside { .. })
    ));
}

#[test]
fn a_cut_or_damaged_payload_is_an_error_never_a_panic() {
    let e = elf();
    for compressed in [xz(&e), gzip(&e), lz4_legacy(&e)] {
        let whole = with_trailer(compressed, e.len());
        for cut in (0..whole.len()).step_by(97) {
            assert!(unpack(&bzimage(&whole[..cut])).is_err(), "cut at {cut}");
        }
        let mut damaged = whole.clone();
        for i in (16..damaged.len() - 8).step_by(53) {
            damaged[i] ^= 0x5a;
        }
        assert!(unpack(&bzimage(&damaged)).is_err());
    }
}

#[test]
fn a_kernel_is_unpacked_once_and_the_file_serves_later_boots() {
    let dir = tempfile::tempdir().unwrap();
    let e = elf();
    let kernel = dir.path().join("k");
    std::fs::write(&kernel, bzimage(&with_trailer(xz(&e), e.len()))).unwrap();
    let out = dir.path().join("k.vmlinux");
    assert_eq!(unpacked(&kernel, &out).unwrap(), out);
    assert_eq!(std::fs::read(&out).unwrap(), e);
    // Later boots read the unpacked file, not the image.
    std::fs::remove_file(&kernel).unwrap();
    assert_eq!(unpacked(&kernel, &out).unwrap(), out);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
