//! The test instance bundle: two builds give identical bytes, and e2fsprogs' own tools read
//! the root image as a clean ext4 file system with the label, UUID and marker file the bundle
//! names.

use mallee_image_build::elf::minimal_static_elf;
use mallee_image_build::guest;
use mallee_image_build::netboot::{self, NetbootSpec};
use std::path::Path;
use std::process::Command;

fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}; run `just setup` (e2fsprogs)"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn building_the_guest_bundle_twice_gives_identical_bytes() {
    let kernel = mallee_image_build::pinned_kernel().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let init = tmp.path().join("mallee-init");
    std::fs::write(&init, minimal_static_elf(b"init")).unwrap();
    let a = guest::build(&init, &kernel, &tmp.path().join("a")).unwrap();
    // A second build from a fresh staging directory must not differ (what the staging files
    // carry that the clock sets, ctime and atime, is checked pinned in the next test).
    let b = guest::build(&init, &kernel, &tmp.path().join("b")).unwrap();
    assert_eq!(a.root, {
        let mut r = b.root.clone();
        r.path = a.root.path.clone();
        r
    });
    for f in ["initrd", "root.img", "root.id"] {
        let x = std::fs::read(tmp.path().join("a").join(f)).unwrap();
        let y = std::fs::read(tmp.path().join("b").join(f)).unwrap();
        assert!(x == y, "{f} differs between two builds");
    }
    assert_eq!(
        std::fs::metadata(tmp.path().join("a/root.img"))
            .unwrap()
            .len(),
        guest::ROOT_MIB << 20
    );
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !["initrd", "root.img", "root.id"].contains(&n.as_str()))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}

#[test]
fn e2fsprogs_reads_the_root_image_as_the_bundle_names_it() {
    let kernel = mallee_image_build::pinned_kernel().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let init = tmp.path().join("mallee-init");
    std::fs::write(&init, minimal_static_elf(b"init")).unwrap();
    let out = tmp.path().join("guest");
    guest::build(&init, &kernel, &out).unwrap();
    let id = std::fs::read_to_string(out.join("root.id")).unwrap();
    let field = |k: &str| {
        id.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in root.id: {id}"))
            .to_string()
    };
    let (label, uuid) = (field("label"), field("uuid"));
    assert_eq!(label, guest::ROOT_LABEL);

    let image = out.join("root.img");
    let image = image.to_str().unwrap();
    tool("e2fsck", &["-fn", image]);
    let header = tool("dumpe2fs", &["-h", image]);
    let value = |name: &str| {
        header
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim_start_matches(':').trim().to_string())
            .unwrap_or_else(|| panic!("no {name} in dumpe2fs: {header}"))
    };
    assert_eq!(value("Filesystem volume name"), label);
    assert_eq!(value("Filesystem UUID"), uuid);
    let marker = tool(
        "debugfs",
        &["-R", &format!("cat /{}", guest::MARKER_PATH), image],
    );
    assert!(
        marker.contains("name=mallee-guest-root")
            && marker.contains(&format!("kernel={}", kernel.release())),
        "{marker}"
    );
    let stat = tool(
        "debugfs",
        &["-R", &format!("stat /{}", guest::MARKER_PATH), image],
    );
    assert!(
        stat.contains("User:     0   Group:     0") && stat.contains("ctime: 0x00000001:"),
        "the marker's owner and times are not pinned: {stat}"
    );
}

#[test]
fn the_guest_ramdisk_is_init_and_virtio_disks_and_nic_and_nothing_dynamic() {
    let kernel = mallee_image_build::pinned_kernel().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let init = tmp.path().join("mallee-init");
    std::fs::write(&init, minimal_static_elf(b"init")).unwrap();
    let spec = NetbootSpec::guest(&init);
    let (fs, modules) = netboot::assemble(&spec, &kernel).unwrap();
    assert!(fs.contains("init") && fs.contains("dev/console"));
    assert!(modules >= 3, "{modules} modules");
    let cpio = String::from_utf8_lossy(&fs.to_cpio()).into_owned();
    assert!(cpio.contains("virtio_blk kernel/drivers/block/virtio_blk.ko"));
    // Its NIC takes the address its VMM's DHCP answer gives (and reaches the metadata service).
    assert!(cpio.contains("virtio_net kernel/drivers/net/virtio_net.ko"));

    let mut spec = NetbootSpec::guest(&init);
    spec.dynamic_programs
        .push(("sbin/mke2fs".into(), Path::new("/usr/sbin/mke2fs").into()));
    let err = netboot::assemble(&spec, &kernel).unwrap_err();
    assert!(
        matches!(err, netboot::NetbootError::DynamicRefused { .. }),
        "{err}"
    );
}
