"""Drives one instance life twice through the EC2 and S3 APIs of a host frontend whose compute
node is a QEMU guest running the node agent: uploads kernel, ramdisk and root image, registers
them, runs an instance, waits for `running` and for MARKER in GetConsoleOutput, terminates it,
then does it again (the node should not fetch the images again); then an image whose kernel
is garbage must end `terminated` with the VMM's failure as the reason. After the first
launch it prints KILL and waits for RESTARTED (the harness kill -9s and restarts the frontend). Prints `figure NAME SECONDS`
lines and `ok STEP` lines for the Rust test, and `guest-disk LINE` for each disk line the guest logged. Each good
launch must show EPHEMERAL_LINE (its ephemeral disk as the guest sees it) in its console.
Usage: node_agent.py ENDPOINT KERNEL RAMDISK ROOT (MARKER, EPHEMERAL_LINE and TIMEOUT in the
environment; credentials through AWS_SHARED_CREDENTIALS_FILE and, for an https ENDPOINT, the
frontend's CA bundle through AWS_CA_BUNDLE)."""

import os
import sys
import time

import boto3

EP, KERNEL, RAMDISK, ROOT = sys.argv[1:5]
MARKER = os.environ["MARKER"]
EPHEMERAL_LINE = os.environ["EPHEMERAL_LINE"]
TIMEOUT = float(os.environ.get("TIMEOUT", "900"))

ec2 = boto3.client("ec2", endpoint_url=EP, region_name="us-east-1")
s3 = boto3.client("s3", endpoint_url=EP, region_name="us-east-1")


def wait_for(what, check, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(1)


def state(iid):
    r = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    return r["State"]["Name"], r.get("StateReason", {}).get("Message", "")


def console(iid):
    # botocore already base64-decodes GetConsoleOutput's Output.
    return ec2.get_console_output(InstanceId=iid).get("Output") or ""


s3.create_bucket(Bucket="images")
for path, key, kind in [(KERNEL, "vmlinuz", "kernel"), (RAMDISK, "initrd", "ramdisk"), (ROOT, "root.img", None)]:
    meta = {"mallee-image-type": kind} if kind else {}
    with open(path, "rb") as f:
        s3.put_object(Bucket="images", Key=key, Body=f.read(), Metadata=meta)
print(f"bytes {sum(os.path.getsize(p) for p in (KERNEL, RAMDISK, ROOT))}", flush=True)
eki = ec2.register_image(Name="kernel", ImageLocation="images/vmlinuz")["ImageId"]
eri = ec2.register_image(Name="initrd", ImageLocation="images/initrd")["ImageId"]
emi = ec2.register_image(Name="root", ImageLocation="images/root.img", KernelId=eki, RamdiskId=eri,
                         Architecture="x86_64")["ImageId"]
print(f"ok registered {emi} {eki} {eri}", flush=True)

for launch in ("first", "cached"):
    t0 = time.monotonic()
    iid = ec2.run_instances(ImageId=emi, MinCount=1, MaxCount=1, InstanceType="m1.small")["Instances"][0]["InstanceId"]
    print(f"ok run {launch} {iid}", flush=True)

    def running():
        s, why = state(iid)
        if s in ("terminated", "shutting-down"):
            raise SystemExit(f"{iid} went {s} before running: {why}")
        return s == "running"

    wait_for(f"{iid} running", running)
    t1 = time.monotonic()
    print(f"figure {launch}-running {t1 - t0:.1f}", flush=True)
    wait_for(f"{MARKER!r} in the console of {iid}", lambda: MARKER in console(iid))
    t2 = time.monotonic()
    print(f"figure {launch}-marker {t2 - t0:.1f}", flush=True)
    print(f"ok marker {launch}", flush=True)
    out = console(iid)
    for line in out.splitlines():
        if "mallee-init: disk " in line:
            print(f"guest-disk {line.strip()}", flush=True)
        if "eth0" in line or "ready role" in line:
            print(f"guest-net {line.strip()}", flush=True)
    assert EPHEMERAL_LINE in out, f"{EPHEMERAL_LINE!r} not in the console of {iid}"
    # The guest took its private address from its VMM's DHCP answer, on its group's VLAN.
    ip = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["PrivateIpAddress"]
    assert f"{MARKER}{ip}/27 " in out, f"the guest did not take {ip}/27: {out}"
    print(f"ok address {launch} {ip}", flush=True)
    # Its VMM serves metadata: the guest asked for its instance id (IMDSv2) and said it.
    wait_for(f"the instance id from the metadata service in the console of {iid}",
             lambda: f"metadata: instance-id {iid}" in console(iid), timeout=60)
    print(f"ok metadata {launch}", flush=True)

    def reachable():
        st = ec2.describe_instance_status(InstanceIds=[iid])["InstanceStatuses"]
        return st and st[0]["InstanceStatus"]["Details"][0]["Status"] == "passed"
    wait_for(f"{iid}'s reachability check to pass (its node saw the guest take its address)", reachable)
    print(f"ok reachability {launch}", flush=True)
    if launch == "first":
        # kill -9 the frontend and restart it: the node and its instance carry on.
        print("KILL", flush=True)
        assert sys.stdin.readline().strip() == "RESTARTED"
        assert state(iid)[0] == "running", state(iid)
        print("ok running after frontend restart", flush=True)
    ec2.terminate_instances(InstanceIds=[iid])
    wait_for(f"{iid} terminated", lambda: state(iid)[0] == "terminated", timeout=120)
    print(f"figure {launch}-terminated {time.monotonic() - t2:.1f}", flush=True)
    print(f"ok terminated {launch}", flush=True)
# A VMM that cannot boot its kernel: the instance ends terminated with the node's reason.
s3.put_object(Bucket="images", Key="bad-vmlinuz", Body=b"not a kernel" * 100,
              Metadata={"mallee-image-type": "kernel"})
s3.put_object(Bucket="images", Key="tiny.img", Body=b"\x01" * 4096)
bad_eki = ec2.register_image(Name="bad-kernel", ImageLocation="images/bad-vmlinuz")["ImageId"]
bad_emi = ec2.register_image(Name="bad", ImageLocation="images/tiny.img", KernelId=bad_eki,
                             Architecture="x86_64")["ImageId"]
iid = ec2.run_instances(ImageId=bad_emi, MinCount=1, MaxCount=1, InstanceType="m1.small")["Instances"][0]["InstanceId"]
wait_for(f"{iid} terminated", lambda: state(iid)[0] == "terminated", timeout=300)
why = state(iid)[1]
print(f"failed-reason {why}", flush=True)
assert "mallee-vmm failed" in why, why
print("ok failed launch reported", flush=True)
print("ok done", flush=True)
