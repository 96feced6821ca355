//! `just demo`: boots the compute node image under QEMU, shows its console live and stays up
//! until Ctrl-C (which stops QEMU too).

use anyhow::Result;
use mallee_qemu_tests::{Images, Nic, TestDir, VmConfig};
use std::io::Write;
use std::time::Duration;

fn main() -> Result<()> {
    let image = Images::node()?;
    let dir = TestDir::new("demo");
    println!(
        "demo: booting the compute node ({}) under QEMU TCG with nested KVM",
        image.initramfs.display()
    );
    let mut vm = VmConfig::new("node")
        .netboot(&image)
        .nested_kvm(true)
        .nic(Nic::user())
        .launch(&dir)?;
    let mut shown = 0;
    let mut ready = false;
    while vm.is_running() {
        let text = vm.console().text();
        if text.len() > shown {
            print!("{}", &text[shown..]);
            std::io::stdout().flush()?;
            shown = text.len();
        }
        if !ready && text.contains("mallee-init: ready") {
            ready = true;
            println!(
                "\ndemo: node ready {:.1} s after QEMU started; console log {}; Ctrl-C stops it",
                vm.started().elapsed().as_secs_f64(),
                vm.console().path().display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("demo: the node VM exited");
    Ok(())
}
