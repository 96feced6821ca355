//! `just bench appliance`: the frontend appliance from power-on to API ready, booted two ways in
//! one run, alternating, each on a fresh blank disk of the same size: the flashable image under
//! OVMF (firmware, systemd-boot, the unified kernel image, the data partition grown and
//! formatted) and the kernel + initramfs bundle with QEMU's `-kernel` (a whole blank data disk
//! formatted). Same QEMU, memory and NICs. Prints the median of each and their ratio.

use std::time::{Duration, Instant};

use mallee_qemu_tests::cloud::{self, FRONTEND_READY};
use mallee_qemu_tests::{Images, Nic, Segment, TestDir, VmConfig};

const RUNS: usize = 3;
const DISK_MIB: u64 = 1536;

fn main() {
    // `cargo test --all-targets` runs harness-less benches without arguments; only `cargo bench`
    // (which passes --bench) should spend minutes booting appliances.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let bundle = Images::netboot("frontend").expect("frontend bundle (run `just images`)");
    Images::appliance().expect("flashable image (run `just images`)");
    let dir = TestDir::new("appliance_bench");
    let segment = Segment::new();
    let (mut image_ms, mut bundle_ms) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        for flashed in [true, false] {
            let disk = dir.file(&format!("disk-{run}-{flashed}.img"));
            let config = if flashed {
                cloud::flash_appliance(&disk, DISK_MIB).expect("flash the image");
                VmConfig::new(&format!("image{run}")).uefi()
            } else {
                cloud::data_disk(&disk, DISK_MIB).expect("blank data disk");
                VmConfig::new(&format!("bundle{run}")).netboot(&bundle)
            };
            let started = Instant::now();
            let mut vm = config
                .memory_mib(1024)
                .nic(Nic::user())
                .nic(Nic::segment(&segment))
                .disk(disk.clone())
                .launch(&dir)
                .expect("start QEMU");
            vm.wait_for(FRONTEND_READY, Duration::from_secs(300))
                .unwrap_or_else(|e| panic!("the appliance did not become ready: {e}"));
            let ms = started.elapsed().as_millis() as u64;
            if flashed {
                &mut image_ms
            } else {
                &mut bundle_ms
            }
            .push(ms);
            drop(vm);
            let _ = std::fs::remove_file(&disk);
        }
    }
    let median = |v: &mut Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let (image, bundle) = (median(&mut image_ms), median(&mut bundle_ms));
    println!(
        "bench: appliance power-on to API ready (median of {RUNS}, alternating) image-uefi={image} ms bundle-kernel={bundle} ms ratio={:.2}",
        image as f64 / bundle as f64
    );
    let size = std::fs::metadata(Images::appliance().unwrap())
        .map(|m| m.len())
        .unwrap_or(0);
    println!("bench: appliance image {} MiB raw", size >> 20);
}
