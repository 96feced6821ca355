//! `just demo`: a Mallee cloud under QEMU for a person to try. Boots the frontend appliance
//! (data disk, PXE on a private segment, API forwarded to a host port), PXE-boots a compute
//! node from it, uploads and registers an image with the AWS CLI, runs an instance on the node
//! and prints its console output, then prints the AWS CLI commands to try by hand and keeps the
//! cloud running until Ctrl-C, which stops every VM.

use anyhow::{Context, Result};
use mallee_qemu_tests::cloud::{self, NODE_READY};
use mallee_qemu_tests::{Segment, TestDir};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Blocks SIGINT and SIGTERM in every thread and returns a flag a waiter thread sets when one
/// arrives (QEMU children get the default mask back from std's spawn).
fn stop_flag() -> Arc<AtomicBool> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, exclusively borrowed sigset_t; the signals are constants.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let mut signal = 0;
        // SAFETY: `set` is initialised; `signal` is a valid out pointer.
        unsafe { libc::sigwait(&set, &mut signal) };
        flag.store(true, Ordering::SeqCst);
    });
    stop
}

fn main() -> Result<()> {
    let stop = stop_flag();
    let dir = TestDir::new("demo");
    let segment = Segment::new();
    let disk = dir.file("frontend-disk.img");
    cloud::flash_appliance(&disk, 2048)?;
    println!(
        "demo: booting the frontend appliance flashed onto a 2 GiB disk ({}) under UEFI (QEMU TCG, OVMF)",
        disk.display()
    );
    let fe = cloud::start_frontend(&dir, "frontend", &segment, &disk, Duration::from_secs(600))?;
    println!(
        "demo: frontend ready {:.1} s after QEMU started; API at {}",
        fe.vm.started().elapsed().as_secs_f64(),
        fe.endpoint
    );

    println!("demo: powering on a diskless compute node; it PXE-boots from the frontend");
    let mut node = cloud::node_config("node1", &segment, "52:54:00:77:00:01").launch(&dir)?;
    let ready = node
        .wait_for(NODE_READY, Duration::from_secs(600))
        .context("the node did not boot")?;
    println!(
        "demo: node ready at {}/{} {:.1} s after power-on",
        ready[1],
        ready[2],
        node.started().elapsed().as_secs_f64()
    );

    println!("demo: uploading the Debian kernel, the guest ramdisk (mallee-init) and the ext4 root image (target/images/guest) to Walrus; registering them");
    let image = fe.upload_test_image("demo-images")?;
    println!(
        "demo: kernel {}, ramdisk {}, machine image {}",
        image.eki, image.eri, image.emi
    );
    println!(
        "demo: aws ec2 run-instances --image-id {} --instance-type m1.small",
        image.emi
    );
    let id = fe.run_instances(&image.emi, 1)?.remove(0);
    fe.wait_state(&id, "running", Duration::from_secs(600))?;
    println!("demo: {id} is running on the node under mallee-vmm; waiting for its console");
    let out = fe.wait_console(&id, cloud::GUEST_MARKER, Duration::from_secs(600))?;
    println!("demo: aws ec2 get-console-output --instance-id {id} (last lines):");
    let lines: Vec<&str> = out.lines().collect();
    for line in &lines[lines.len().saturating_sub(15)..] {
        println!("    {line}");
    }
    if out.contains(&image.root_disk_line) {
        println!(
            "demo: the guest sees the root image on vda ({})",
            image.root_disk_line
        );
    } else {
        println!(
            "demo: warning: no `{}` in the guest's console",
            image.root_disk_line
        );
    }

    println!(
        "\ndemo: the cloud is running. Consoles: {}/{{frontend,node1}}.console\n\
         Try it from another shell:\n\n{}\n\nCtrl-C stops everything.",
        dir.path().display(),
        fe.cli_hint()
    );
    let mut fe = fe;
    while !stop.load(Ordering::SeqCst) {
        if !fe.vm.is_running() || !node.is_running() {
            println!("demo: a VM exited by itself; stopping");
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(node);
    drop(fe);
    println!("demo: stopped the frontend and the node");
    Ok(())
}
