use super::*;

#[test]
fn sizes_parse() {
    assert_eq!(parse_size("mem", "64K").unwrap(), 65536);
    assert_eq!(parse_size("mem", "1G").unwrap(), 1 << 30);
    assert!(parse_size("mem", "99999999999999G").is_err());
}

#[test]
fn mem_is_whole_mib() {
    assert_eq!(parse_mem("1G").unwrap(), 1024);
    assert_eq!(parse_mem("1048576").unwrap(), 1);
    assert_eq!(parse_mem("64K").unwrap_err().field, "mem");
}

#[test]
fn a_disk_takes_ro_and_a_serial() {
    let d = parse_disk("/d.img,ro,serial=vol-1").unwrap();
    assert_eq!(d.source, DiskSource::File("/d.img".into()));
    assert!(d.read_only);
    assert_eq!(d.serial.as_deref(), Some("vol-1"));
}

#[test]
fn a_disk_with_a_base_is_a_copy_on_write_top() {
    let d = parse_disk("/i/root.img,serial=root,base=/cache/abc").unwrap();
    let source = DiskSource::Overlay {
        base: "/cache/abc".into(),
        top: "/i/root.img".into(),
    };
    assert_eq!(d.source, source);
    // The display form is the command line's, and parses back.
    assert_eq!(parse_disk(&source.to_string()).unwrap().source, source);
    let e = parse_disk("aoe:eth1:1.2,base=/cache/abc").unwrap_err();
    assert!(e.reason.contains("needs a file top"), "{e}");
    assert!(parse_disk("/i/root.img,base=").is_err());
}

#[test]
fn a_nic_takes_a_tap_name_or_fd_and_a_mac() {
    let n = parse_net("fd=3,mac=52:54:00:00:00:01").unwrap();
    assert_eq!(n.tap, TapSource::Fd(3));
    assert_eq!(n.mac, Mac([0x52, 0x54, 0, 0, 0, 1]));
    let e = parse_net("tap=t0,mac=52:54:00:00:00").unwrap_err();
    assert!(e.reason.contains("52:54:00:00:00"), "{e}");
}

#[test]
fn choices_are_spelled_as_in_json() {
    let level: super::super::LogLevel = parse_choice("log_level", "warn").unwrap();
    assert_eq!(level, super::super::LogLevel::Warn);
    let e = parse_choice::<super::super::OnReboot>("on_reboot", "never").unwrap_err();
    assert!(e.reason.contains("never"), "{e}");
}
