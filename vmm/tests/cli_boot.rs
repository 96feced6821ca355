//! The `mallee-vmm` binary end to end on the host's `/dev/kvm`: configuration errors, and a
//! hand-made 64-bit ELF "kernel" booted through the real Linux boot path (ELF loader, zero page,
//! command line, GDT, identity page tables, long-mode entry) that reports what it found on the
//! serial port and resets the machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mallee_proto::vmm::{encode_line, Disk, Exit, Failure, Reply, Request, VmState, VmmConfig};

const VMM: &str = env!("CARGO_BIN_EXE_mallee-vmm");

/// A per-test scratch directory under the target dir, emptied first.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[rustfmt::skip]
const GUEST: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03,             // mov dx, 0x3f8
    0xb0, b'L', 0xee,                   // mov al, 'L'; out dx, al
    0x8a, 0x86, 0xe8, 0x01, 0, 0,       // mov al, [rsi + 0x1e8] (boot_params.e820_entries)
    0x04, b'0', 0xee,                   // add al, '0'; out dx, al
    0x8b, 0x9e, 0x28, 0x02, 0, 0,       // mov ebx, [rsi + 0x228] (hdr.cmd_line_ptr)
    0x8a, 0x03, 0xee,                   // mov al, [rbx]; out dx, al
    0x8a, 0x43, 0x01, 0xee,             // mov al, [rbx + 1]; out dx, al
    0xb0, 0xfe, 0xe6, 0x64,             // i8042 reset
    0xf4, 0xeb, 0xfd,                   // hlt; jmp hlt
];

/// An ELF64 executable with one PT_LOAD segment holding `code` at 1 MiB, entered at its start.
fn elf_kernel(code: &[u8]) -> Vec<u8> {
    const LOAD: u64 = 0x10_0000;
    const OFFSET: u64 = 0x1000;
    let mut e = Vec::new();
    e.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&LOAD.to_le_bytes()); // e_entry
    e.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    e.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 56, 1, 64, 0, 0] {
        e.extend_from_slice(&v.to_le_bytes());
    }
    e.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for v in [
        OFFSET,
        LOAD,
        LOAD,
        code.len() as u64,
        code.len() as u64,
        0x1000,
    ] {
        e.extend_from_slice(&v.to_le_bytes());
    }
    e.resize(OFFSET as usize, 0);
    e.extend_from_slice(code);
    e
}

fn require_kvm() {
    assert!(
        Path::new("/dev/kvm").exists(),
        "/dev/kvm is missing: these tests need KVM (run `just setup` on a KVM-capable host)"
    );
}

fn run(args: &[&str]) -> Output {
    Command::new(VMM)
        .args(args)
        .output()
        .expect("run mallee-vmm")
}

#[test]
fn elf_kernel_boots_in_long_mode_and_reads_its_boot_params() {
    require_kvm();
    let dir = scratch("elf_boot");
    let kernel = dir.join("kernel.elf");
    std::fs::write(&kernel, elf_kernel(GUEST)).unwrap();
    let serial = dir.join("serial.log");
    let out = run(&[
        "--kernel",
        kernel.to_str().unwrap(),
        "--cmdline",
        "ok console=ttyS0",
        "--mem",
        "64M",
        "--vcpus",
        "2",
        "--serial",
        serial.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "guest reset is exit 2; stderr: {stderr}"
    );
    // Three e820 entries for 64M (low RAM, BIOS area, RAM above 1M); the command line's start.
    assert_eq!(std::fs::read(&serial).unwrap(), b"L3ok");
}

#[test]
fn json_config_boots_the_same_guest() {
    require_kvm();
    let dir = scratch("json_boot");
    let kernel = dir.join("kernel.elf");
    std::fs::write(&kernel, elf_kernel(GUEST)).unwrap();
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let serial = dir.join("serial.log");
    let cfg = VmmConfig {
        cmdline: "ok".into(),
        memory_mib: 32,
        disks: vec![Disk {
            read_only: true,
            ..Disk::file(&disk, Some("d0"))
        }],
        console: Some(serial.clone()),
        ..VmmConfig::new(&kernel)
    };
    let cfg_path = dir.join("vm.json");
    std::fs::write(&cfg_path, mallee_proto::encode(&cfg)).unwrap();
    let out = run(&["--config", cfg_path.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&serial).unwrap(), b"L3ok");
}

#[test]
fn bad_configuration_is_one_line_naming_the_field() {
    for (args, field) in [
        (vec!["--kernel", "/k", "--mem", "lots"], "mem"),
        (vec!["--kernel", "/k", "--vcpus", "0"], "vcpus"),
        (vec!["--kernel", "/k", "--net", "tap=t0,mac=zz"], "net"),
        (vec!["--mem", "64M"], "kernel"),
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(&format!("`{field}`")), "{stderr}");
    }
}

#[test]
fn missing_kernel_file_is_an_error_naming_it_in_the_failure_report() {
    require_kvm();
    let dir = scratch("missing_kernel");
    let report = dir.join("failure.json");
    let out = run(&[
        "--kernel",
        "/nonexistent/vmlinuz",
        "--mem",
        "32M",
        "--failure-path",
        report.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(i32::from(Exit::Error.code())));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/vmlinuz"), "{stderr}");
    let failure: Failure = mallee_proto::decode(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(failure.exit, Exit::Error);
    assert!(
        failure.message.starts_with("cannot start the VM")
            && failure.message.contains("/nonexistent/vmlinuz"),
        "{failure:?}"
    );
}

#[test]
fn a_config_the_vmm_cannot_run_leaves_a_failure_report() {
    let dir = scratch("bad_config_report");
    let report = dir.join("failure.json");
    let cfg = VmmConfig {
        vcpus: 200,
        failure_path: Some(report.clone()),
        ..VmmConfig::new("/k")
    };
    let cfg_path = dir.join("vm.json");
    std::fs::write(&cfg_path, mallee_proto::encode(&cfg)).unwrap();
    let out = run(&["--config", cfg_path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let failure: Failure = mallee_proto::decode(&std::fs::read(&report).unwrap()).unwrap();
    assert!(failure.message.contains("`vcpus`"), "{failure:?}");
}

#[test]
fn reboot_restarts_the_guest_until_the_api_shuts_it_down() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    require_kvm();
    let dir = scratch("restart_api");
    let kernel = dir.join("kernel.elf");
    std::fs::write(&kernel, elf_kernel(GUEST)).unwrap();
    let serial = dir.join("serial.log");
    let sock = dir.join("api.sock");
    let mut child = Command::new(VMM)
        .args([
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            "ok",
            "--mem",
            "32M",
        ])
        .args(["--serial", serial.to_str().unwrap()])
        .args([
            "--api-socket",
            sock.to_str().unwrap(),
            "--on-reboot",
            "restart",
        ])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Every boot prints "L3ok" and resets; wait for a few boots.
    while std::fs::read(&serial)
        .unwrap_or_default()
        .windows(4)
        .filter(|w| w == b"L3ok")
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "guest did not boot three times");
        assert!(
            child.try_wait().unwrap().is_none(),
            "VMM exited on a reboot"
        );
        std::thread::yield_now();
    }
    let mut s = UnixStream::connect(&sock).expect("API socket");
    s.write_all(
        &[
            encode_line(&Request::Status),
            encode_line(&Request::Shutdown),
        ]
        .concat(),
    )
    .unwrap();
    let mut lines = BufReader::new(s).lines();
    let status: Reply = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    // The guest resets in a loop: the status may catch it between two boots.
    assert!(status.ok, "{status:?}");
    assert!(
        matches!(
            status.state,
            Some(VmState::Running | VmState::Stopping(Exit::Reboot))
        ),
        "{status:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        assert!(
            Instant::now() < deadline,
            "VMM did not stop after the API shutdown"
        );
        std::thread::yield_now();
    };
    assert_eq!(code, Some(3), "API shutdown is exit status 3");
    assert_eq!(Exit::from_code(3), Some(Exit::ApiShutdown));
}
