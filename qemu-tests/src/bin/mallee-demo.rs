//! `just demo`: a Mallee cloud under QEMU for a person to try. Boots the frontend appliance
//! (data disk, PXE on a private segment, API forwarded to a host port, its public side on an
//! "outside" network namespace of this machine), PXE-boots a compute node from it, uploads and
//! registers the Debian cloud image with the AWS CLI, makes a key pair, opens SSH in the default
//! group and runs an instance, waits for cloud-init to finish and for an SSH login to work,
//! then prints the commands to log in and to try the AWS CLI by hand, and keeps the cloud
//! running until Ctrl-C, which stops every VM.

use anyhow::{Context, Result};
use mallee_qemu_tests::cloud::{self, NODE_READY};
use mallee_qemu_tests::outside::Outside;
use mallee_qemu_tests::vm::Nic;
use mallee_qemu_tests::{Images, Segment, TestDir};
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
    cloud::flash_appliance(&disk, 3072)?;
    println!(
        "demo: booting the frontend appliance flashed onto a 3 GiB disk ({}) under UEFI (QEMU TCG, OVMF)",
        disk.display()
    );
    let outside = Outside::new(&dir)?;
    let fe = cloud::start_frontend_with(
        &dir,
        "frontend",
        Nic::segment(&segment),
        &disk,
        Some(outside.nic()),
        Duration::from_secs(600),
    )?;
    println!(
        "demo: frontend ready {:.1} s after QEMU started; API at {}",
        fe.vm.started().elapsed().as_secs_f64(),
        fe.endpoint
    );
    println!(
        "demo: web console at {}/_console/ (user admin, password {}; the browser needs the CA {})",
        fe.endpoint,
        fe.console_password,
        fe.ca_bundle.display()
    );

    println!("demo: powering on a diskless compute node; it PXE-boots from the frontend");
    let mut node = cloud::node_config("node1", &segment, "52:54:00:77:00:01")
        .memory_mib(3072)
        .launch(&dir)?;
    let ready = node
        .wait_for(NODE_READY, Duration::from_secs(600))
        .context("the node did not boot")?;
    println!(
        "demo: node ready at {}/{} {:.1} s after power-on",
        ready[1],
        ready[2],
        node.started().elapsed().as_secs_f64()
    );

    let image = Images::debian_cloud()?;
    println!("demo: uploading the Debian cloud image (target/images/debian-cloud: its kernel, initramfs and GPT root disk) to Walrus and registering it");
    let pem = dir.file("demo.pem");
    let emi = fe.debian_with_ssh(&image, "demo", &pem)?;
    println!(
        "demo: aws ec2 run-instances --image-id {emi} --instance-type c1.medium --key-name demo"
    );
    let id = fe
        .run_instances_with(
            &emi,
            1,
            &["--instance-type", "c1.medium", "--key-name", "demo"],
        )?
        .remove(0);
    fe.wait_state(&id, "running", Duration::from_secs(900))?;
    println!("demo: {id} is running on the node under mallee-vmm; waiting for cloud-init");
    let out = fe.wait_console(&id, "Cloud-init v.", Duration::from_secs(900))?;
    let lines: Vec<&str> = out.lines().collect();
    println!("demo: aws ec2 get-console-output --instance-id {id} (last lines):");
    for line in &lines[lines.len().saturating_sub(8)..] {
        println!("    {line}");
    }
    let public = fe.public_ip(&id)?;
    let ssh = format!(
        "ip netns exec {} ssh -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null debian@{public}",
        outside.namespace(),
        pem.display()
    );
    println!("demo: waiting for an SSH login: {ssh} true");
    let login = format!("debian@{public}");
    outside
        .ssh_until(&pem, &login, "true", "", Duration::from_secs(300))
        .with_context(|| format!("see {}/node1.console", dir.path().display()))?;
    println!("demo: SSH works. Log in to the instance (the outside host is a network namespace of this machine):\n\n    {ssh}\n");

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
