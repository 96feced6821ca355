"""CreateImage with the AWS CLI and boto3 against mallee-frontend (every response model-checked),
with a test node and a stand-in for the storage controller's answers, both driven by the Rust
test: refusals as AWS words them; an image of a running EBS-backed instance, which is stopped,
held stopped while its root volume cannot be copied (the image pending), copied at rest and
started again; NoReboot leaving a running instance alone (a data volume left out with
NoDevice); a stopped instance staying stopped; an instance launched from the new image; an
image failed because its instance was terminated first; DeregisterImage leaving the snapshot.
Prints HOLD-STORAGE / RELEASE-STORAGE (the stand-in stops and resumes answering),
WAIT-STORAGE-REFUSED (until a keeper pass gave up on it) and PAUSE-NODE / RESUME-NODE (the test node stops and resumes reporting) for the harness."""

import os
import sys
import time

from ec2_client import (CHECK, cli, client, expect, instances, step, wait_for, wait_snapshot, wait_state,
                        wait_volume)

ec2 = client()
ec2_once = client(retry=False)
s3 = client("s3")


def harness(ask, answer):
    print(ask, flush=True)
    got = sys.stdin.readline().strip()
    assert got == answer, (ask, got)


def image(emi):
    return ec2.describe_images(ImageIds=[emi])["Images"][0]


def snapshot(sid):
    return ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]


def state(iid):
    return instances(ec2, InstanceIds=[iid])[0]["State"]["Name"]


def root_volume(iid):
    return instances(ec2, InstanceIds=[iid])[0]["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]


def attached(vid):
    atts = ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]["Attachments"]
    return bool(atts) and atts[0]["State"] == "attached"


def tags(resource):
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def wait_image(emi, want):
    """Waits until image `emi` is `want`; an image never skips from pending to another end."""
    def now():
        img = image(emi)
        assert img["State"] in ("pending", want), img
        return img if img["State"] == want else None
    return wait_for(f"image {emi} {want}", now)


# --- EBS-backed instances to image ----------------------------------------------------------
s3.create_bucket(Bucket="images")
s3.put_object(Bucket="images", Key="root.img", Body=os.urandom(4096))
s3.put_object(Bucket="images", Key="vmlinuz", Body=b"kernel" * 100, Metadata={"mallee-image-type": "kernel"})
s3.put_object(Bucket="images", Key="initrd", Body=b"initrd" * 100, Metadata={"mallee-image-type": "ramdisk"})
eki = ec2.register_image(Name="kernel", ImageLocation="images/vmlinuz")["ImageId"]
eri = ec2.register_image(Name="initrd", ImageLocation="images/initrd")["ImageId"]
store_emi = ec2.register_image(Name="plain", ImageLocation="images/root.img", KernelId=eki)["ImageId"]
zone = ec2.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]
seed = ec2.create_volume(Size=1, AvailabilityZone=zone)["VolumeId"]
wait_volume(ec2, seed)
seed_snap = ec2.create_snapshot(VolumeId=seed)["SnapshotId"]
wait_snapshot(ec2, seed_snap)
ebs_emi = ec2.register_image(Name="ebs-root", RootDeviceName="/dev/vda", KernelId=eki, RamdiskId=eri,
                             BlockDeviceMappings=[{"DeviceName": "/dev/vda", "Ebs": {"SnapshotId": seed_snap}}])["ImageId"]
a, b = sorted(i["InstanceId"] for i in ec2.run_instances(ImageId=ebs_emi, MinCount=2, MaxCount=2)["Instances"])
plain = ec2.run_instances(ImageId=store_emi, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
wait_state(ec2, [a, b, plain], "running")
root_a, root_b = root_volume(a), root_volume(b)
wait_for("the root volumes attached", lambda: attached(root_a) and attached(root_b))
print(f"imaged {a} {b}", flush=True)
step("EBS-backed instances running")

# --- refusals ---------------------------------------------------------------------------------
before = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
msg = expect("InvalidParameterValue", ec2.create_image, InstanceId=plain, Name="from-plain")
assert msg == f"Invalid value '{plain}' for instanceId. Instance does not have a volume attached at root (/dev/vda)", msg
expect("InvalidInstanceID.NotFound", ec2.create_image, InstanceId="i-0123456789abcdef0", Name="nobody")
expect("InvalidInstanceID.Malformed", ec2.create_image, InstanceId="bogus", Name="nobody")
expect("InvalidParameterValue", ec2_once.create_image, InstanceId=a, Name="ab")
expect("InvalidAMIName.Duplicate", ec2.create_image, InstanceId=a, Name="ebs-root")
expect("InvalidBlockDeviceMapping", ec2.create_image, InstanceId=a, Name="more-disks",
       BlockDeviceMappings=[{"DeviceName": "/dev/vdb", "Ebs": {"VolumeSize": 1}}])
expect("InvalidBlockDeviceMapping", ec2.create_image, InstanceId=a, Name="bigger-root",
       BlockDeviceMappings=[{"DeviceName": "/dev/vda", "Ebs": {"VolumeSize": 8}}])
expect("InvalidParameterValue", ec2.create_image, InstanceId=a, Name="bad-tags",
       TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "k", "Value": "v"}]}])
data = ec2.create_volume(Size=1, AvailabilityZone=zone)["VolumeId"]
wait_volume(ec2, data)
ec2.attach_volume(VolumeId=data, InstanceId=b, Device="/dev/vdb")
wait_for("the data volume attached", lambda: attached(data))
msg = expect("UnsupportedOperation", ec2.create_image, InstanceId=b, Name="with-data", NoReboot=True)
assert data in msg and "NoDevice mapping for /dev/vdb" in msg, msg
assert {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]} == before, "a refusal made an image"
assert state(a) == "running" and state(b) == "running", "a refusal touched an instance"
step("refusals as AWS words them")

# --- a running instance: stopped, copied at rest, started again -------------------------------
# The stand-in stops answering: the keeper cannot take the root volume from the controller, so
# no copy can be made and the image must stay pending.
harness("HOLD-STORAGE", "HELD")
made = cli("ec2", "create-image", "--instance-id", a, "--name", "web-server", "--description", "web at rest",
           "--tag-specifications", "ResourceType=image,Tags=[{Key=role,Value=web}]",
           "ResourceType=snapshot,Tags=[{Key=made-by,Value=create-image}]")
web = made["ImageId"]
assert web.startswith("emi-"), made
img = image(web)
assert img["State"] == "pending", img
assert (img["RootDeviceType"], img["RootDeviceName"], img["ImageType"]) == ("ebs", "/dev/vda", "machine"), img
assert (img["KernelId"], img["RamdiskId"], img["Architecture"]) == (eki, eri, "x86_64"), img
assert (img["SourceInstanceId"], img["Description"], img["Name"]) == (a, "web at rest", "web-server"), img
assert tags(img) == {"role": "web"}, img
[bdm] = img["BlockDeviceMappings"]
assert bdm["DeviceName"] == "/dev/vda" and bdm["Ebs"]["VolumeSize"] == 1, bdm
web_snap = bdm["Ebs"]["SnapshotId"]
s = snapshot(web_snap)
assert s["Description"] == f"Created by CreateImage({a}) for {web} from {root_a}", s
assert (s["VolumeId"], s["State"], tags(s)) == (root_a, "pending", {"made-by": "create-image"}), s
wait_state(ec2, [a], "stopped")  # its guest was shut down for the copy
expect("IncorrectInstanceState", ec2.start_instances, InstanceIds=[a])
expect("InvalidAMIID.Unavailable", ec2.run_instances, ImageId=web, MinCount=1, MaxCount=1)
expect("InvalidAMIID.Unavailable", ec2.modify_image_attribute, ImageId=web,
       LaunchPermission={"Add": [{"Group": "all"}]})
expect("IncorrectState", ec2.delete_snapshot, SnapshotId=web_snap)
harness("WAIT-STORAGE-REFUSED", "REFUSED")  # a keeper pass ended without a copy
time.sleep(0.5)
assert image(web)["State"] == "pending" and snapshot(web_snap)["State"] == "pending"
assert state(a) == "stopped", "started again before its root volume was copied"
pending = ec2.describe_images(Owners=["self"], Filters=[{"Name": "state", "Values": ["pending"]}])["Images"]
assert [i["ImageId"] for i in pending] == [web], pending
harness("RELEASE-STORAGE", "RELEASED")
wait_state(ec2, [a], "running")
wait_image(web, "available")
cli("ec2", "wait", "image-available", "--image-ids", web)  # the CLI's waiter agrees
assert snapshot(web_snap)["State"] == "completed", "available before its snapshot is in Walrus"
assert "StateReason" not in image(web)
step("a running instance is stopped, copied at rest and started again; pending until stored")

# --- NoReboot: the running instance is copied as it runs --------------------------------------
live = cli("ec2", "create-image", "--instance-id", b, "--name", "b-live", "--no-reboot",
           "--block-device-mappings", 'DeviceName=/dev/vdb,NoDevice=""')["ImageId"]


def live_done():
    assert state(b) == "running", "NoReboot stopped the instance"
    return image(live)["State"] == "available"


wait_for("the NoReboot image", live_done)
img = image(live)
assert [(m["DeviceName"], snapshot(m["Ebs"]["SnapshotId"])["VolumeId"]) for m in img["BlockDeviceMappings"]] == \
    [("/dev/vda", root_b)], img
step("NoReboot: copied while running, the data volume left out")

# --- a stopped instance stays stopped -----------------------------------------------------------
ec2.stop_instances(InstanceIds=[a])
wait_state(ec2, [a], "stopped")
at_rest = ec2.create_image(InstanceId=a, Name="a-stopped")["ImageId"]
wait_image(at_rest, "available")
assert state(a) == "stopped", "a stopped instance was started"
ec2.start_instances(InstanceIds=[a])
wait_state(ec2, [a], "running")
step("a stopped instance is imaged and stays stopped")

# --- an instance from the new image ---------------------------------------------------------------
child = ec2.run_instances(ImageId=web, MinCount=1, MaxCount=1)["Instances"][0]
assert child["RootDeviceType"] == "ebs" and child["ImageId"] == web, child
child = child["InstanceId"]
wait_state(ec2, [child], "running")
child_root = ec2.describe_volumes(VolumeIds=[root_volume(child)])["Volumes"][0]
assert child_root["SnapshotId"] == web_snap and child_root["Size"] == 1, child_root
print(f"launched {child} {web_snap}", flush=True)
ec2.terminate_instances(InstanceIds=[child])
wait_state(ec2, [child], "terminated")
step("an instance launched from the new image boots from its snapshot")

# --- an instance terminated before its copy: the image fails ------------------------------------
harness("PAUSE-NODE", "NODE-PAUSED")  # the guest never finishes shutting down
doomed = ec2.create_image(InstanceId=a, Name="doomed")["ImageId"]
assert state(a) == "stopping"
doomed_snap = image(doomed)["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
ec2.terminate_instances(InstanceIds=[a])
img = wait_image(doomed, "failed")
assert img["StateReason"]["Code"] == "Server.InternalError", img
assert f"instance {a} was terminated before its root volume could be copied" in img["StateReason"]["Message"], img
assert snapshot(doomed_snap)["State"] == "error"
expect("InvalidAMIID.Unavailable", ec2.run_instances, ImageId=doomed, MinCount=1, MaxCount=1)
harness("RESUME-NODE", "NODE-RESUMED")
wait_state(ec2, [a], "terminated")
step("an instance terminated before its copy fails its image, with the reason")

# --- DeregisterImage leaves the snapshot ------------------------------------------------------------
ec2.deregister_image(ImageId=web)
expect("InvalidAMIID.NotFound", ec2.describe_images, ImageIds=[web])
assert snapshot(web_snap)["State"] == "completed"
ec2.delete_snapshot(SnapshotId=web_snap)
expect("InvalidSnapshot.NotFound", ec2.describe_snapshots, SnapshotIds=[web_snap])
step("deregistered: the snapshot stays until deleted")
print(CHECK.summary(), flush=True)
