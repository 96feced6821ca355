"""The EC2 flow with the AWS CLI and boto3 against mallee-frontend, with a test node (driven by
the Rust test) that speaks the node protocol. Every response is model-checked (ec2_model).
Prints `KILL` mid-flow and waits for `RESTARTED` (the harness kill -9s and restarts the
frontend). Usage: ec2_flow.py ENDPOINT (USER2_KEY/USER2_SECRET in the environment)."""

import base64
import hashlib
import os
import sys
import tempfile

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ec2_client import (CHECK, admin_keys, b64, cli, client, expect, instances, raw, states,
                        step, wait_for, wait_snapshot, wait_state, wait_volume)

ec2 = client()
ec2_once = client(retry=False)
s3 = client("s3")
other = client(key=os.environ["USER2_KEY"], secret=os.environ["USER2_SECRET"])
key, secret = admin_keys()

# --- images from Walrus objects -------------------------------------------------------------
root = os.urandom(64 * 1024)
s3.create_bucket(Bucket="images")
s3.put_object(Bucket="images", Key="root.img", Body=root)
s3.put_object(Bucket="images", Key="vmlinuz", Body=b"kernel" * 100, Metadata={"mallee-image-type": "kernel"})
s3.put_object(Bucket="images", Key="initrd", Body=b"initrd" * 100, Metadata={"mallee-image-type": "ramdisk"})
print(f"image-sha256 {hashlib.sha256(root).hexdigest()}", flush=True)
eki = cli("ec2", "register-image", "--name", "kernel", "--image-location", "images/vmlinuz")["ImageId"]
eri = cli("ec2", "register-image", "--name", "initrd", "--image-location", "images/initrd")["ImageId"]
assert eki.startswith("eki-") and eri.startswith("eri-"), (eki, eri)
emi = ec2.register_image(Name="debian", ImageLocation="images/root.img", KernelId=eki, RamdiskId=eri,
                         Architecture="x86_64")["ImageId"]
assert emi.startswith("emi-"), emi
expect("InvalidAMIName.Duplicate", ec2.register_image, Name="debian", ImageLocation="images/root.img")
expect("InvalidParameterValue", ec2.register_image, Name="img-x", ImageLocation="images/missing")
expect("InvalidParameterValue", ec2.register_image, Name="img-x", ImageLocation="images/root.img", KernelId=eri)
imgs = {i["ImageId"]: i for i in ec2.describe_images(Owners=["self"])["Images"]}
assert set(imgs) == {eki, eri, emi}, imgs
assert imgs[emi]["KernelId"] == eki and imgs[emi]["RamdiskId"] == eri and imgs[emi]["ImageType"] == "machine"
assert imgs[eki]["ImageType"] == "kernel"
only = ec2.describe_images(Filters=[{"Name": "image-type", "Values": ["ramdisk"]}])["Images"]
assert [i["ImageId"] for i in only] == [eri], only
expect("InvalidAMIID.Malformed", ec2.describe_images, ImageIds=["emi-zz"])
expect("InvalidAMIID.NotFound", ec2.describe_images, ImageIds=["emi-00000000"])
assert other.describe_images()["Images"] == [], "a private image leaked to another user"
expect("InvalidAMIID.NotFound", other.describe_images, ImageIds=[emi])
cli("ec2", "modify-image-attribute", "--image-id", eki, "--launch-permission", "Add=[{Group=all}]")
perm = ec2.describe_image_attribute(ImageId=eki, Attribute="launchPermission")["LaunchPermissions"]
assert perm == [{"Group": "all"}], perm
assert [i["ImageId"] for i in other.describe_images(ExecutableUsers=["all"])["Images"]] == [eki]
expect("AuthFailure", other.deregister_image, ImageId=eki)
step("images")

# --- key pairs ------------------------------------------------------------------------------
kp = cli("ec2", "create-key-pair", "--key-name", "k1", "--key-type", "ed25519")
priv = serialization.load_ssh_private_key(kp["KeyMaterial"].encode(), password=None)
pub_blob = base64.b64decode(priv.public_key().public_bytes(
    serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).split()[1])
assert kp["KeyFingerprint"] == base64.b64encode(hashlib.sha256(pub_blob).digest()).decode(), kp
expect("InvalidKeyPair.Duplicate", ec2.create_key_pair, KeyName="k1")
expect("InvalidParameterValue", ec2.create_key_pair, KeyName="k-dsa", KeyType="dsa")
mine = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
    serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
with tempfile.NamedTemporaryFile(suffix=".pub") as f:
    f.write(mine + b" me@host\n")
    f.flush()
    imp = cli("ec2", "import-key-pair", "--key-name", "imported", "--public-key-material", f"fileb://{f.name}")
assert imp["KeyFingerprint"] == base64.b64encode(hashlib.sha256(base64.b64decode(mine.split()[1])).digest()).decode()
expect("InvalidKey.Format", ec2.import_key_pair, KeyName="bad", PublicKeyMaterial=b"ssh-rsa notbase64")
names = sorted(k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"])
assert names == ["imported", "k1"], names
got = ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": ["imp*"]}], IncludePublicKey=True)["KeyPairs"]
assert len(got) == 1 and got[0]["PublicKey"].startswith("ssh-ed25519 "), got
expect("InvalidKeyPair.NotFound", ec2.describe_key_pairs, KeyNames=["nope"])
assert other.describe_key_pairs()["KeyPairs"] == []
other.delete_key_pair(KeyName="k1")  # their namespace: deletes nothing of ours
ec2.delete_key_pair(KeyName="imported")
assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["k1"]
step("key pairs")

# --- security groups ------------------------------------------------------------------------
web = cli("ec2", "create-security-group", "--group-name", "web", "--description", "web servers")["GroupId"]
expect("InvalidGroup.Duplicate", ec2.create_security_group, GroupName="web", Description="again")
cli("ec2", "authorize-security-group-ingress", "--group-name", "web", "--protocol", "tcp", "--port", "22",
    "--cidr", "0.0.0.0/0")
ec2.authorize_security_group_ingress(GroupId=web, IpPermissions=[
    {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "UserIdGroupPairs": [{"GroupName": "default"}]},
    {"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}])
expect("InvalidPermission.Duplicate", ec2.authorize_security_group_ingress, GroupName="web",
       IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="0.0.0.0/0")
expect("InvalidParameterValue", ec2.authorize_security_group_ingress, GroupName="web",
       IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="300.0.0.0/99")
expect("InvalidParameterValue", ec2_once.authorize_security_group_ingress, GroupName="web",
       IpProtocol="tcp", FromPort=90, ToPort=80, CidrIp="0.0.0.0/0")
g = ec2.describe_security_groups(GroupNames=["web"])["SecurityGroups"][0]
perms = {(p["IpProtocol"], p.get("FromPort")): p for p in g["IpPermissions"]}
assert perms[("tcp", 22)]["IpRanges"] == [{"CidrIp": "0.0.0.0/0"}], perms
assert perms[("tcp", 80)]["UserIdGroupPairs"][0]["GroupName"] == "default", perms
ec2.revoke_security_group_ingress(GroupName="web", IpProtocol="icmp", FromPort=-1, ToPort=-1, CidrIp="10.0.0.0/8")
expect("InvalidPermission.NotFound", ec2.revoke_security_group_ingress, GroupName="web",
       IpProtocol="icmp", FromPort=-1, ToPort=-1, CidrIp="10.0.0.0/8")
assert len(ec2.describe_security_groups(GroupIds=[web])["SecurityGroups"][0]["IpPermissions"]) == 2
tmp = ec2.create_security_group(GroupName="tmp", Description="t")["GroupId"]
ec2.delete_security_group(GroupId=tmp)
expect("InvalidGroup.NotFound", ec2.describe_security_groups, GroupIds=[tmp])
expect("InvalidGroup.NotFound", other.describe_security_groups, GroupNames=["web"])
step("security groups")

# --- instances ------------------------------------------------------------------------------
zone = cli("ec2", "describe-availability-zones")["AvailabilityZones"][0]["ZoneName"]
run = ec2.run_instances(ImageId=emi, MinCount=2, MaxCount=2, InstanceType="m1.small", KeyName="k1",
                        SecurityGroups=["web"], UserData="#!/bin/sh\necho hello\n",
                        Placement={"AvailabilityZone": zone}, ClientToken="flow-1")
pair = sorted(i["InstanceId"] for i in run["Instances"])
assert len(pair) == 2 and all(i["State"]["Name"] == "pending" for i in run["Instances"]), run
again = ec2.run_instances(ImageId=emi, MinCount=2, MaxCount=2, ClientToken="flow-1")
assert sorted(i["InstanceId"] for i in again["Instances"]) == pair, "ClientToken was not idempotent"
wait_state(ec2, pair, "running")
print(f"instances {' '.join(pair)}", flush=True)
inst = instances(ec2, InstanceIds=pair)
assert {i["KernelId"] for i in inst} == {eki} and {i["KeyName"] for i in inst} == {"k1"}, inst
assert all(i["SecurityGroups"][0]["GroupName"] == "web" for i in inst), inst
assert all(i["Placement"]["AvailabilityZone"] == zone for i in inst)
ip0 = inst[0]["PrivateIpAddress"]
for filters, want in [
    ([{"Name": "instance-state-name", "Values": ["running"]}], pair),
    ([{"Name": "image-id", "Values": [emi]}, {"Name": "key-name", "Values": ["k1"]}], pair),
    ([{"Name": "group-name", "Values": ["web"]}], pair),
    ([{"Name": "availability-zone", "Values": [zone]}], pair),
    ([{"Name": "private-ip-address", "Values": [ip0]}], [inst[0]["InstanceId"]]),
    ([{"Name": "instance-state-name", "Values": ["stopped"]}], []),
]:
    got = sorted(i["InstanceId"] for i in instances(ec2, Filters=filters))
    assert got == sorted(want), (filters, got, want)
expect("InvalidParameterValue", ec2.describe_instances, Filters=[{"Name": "no-such-filter", "Values": ["x"]}])
out = cli("ec2", "get-console-output", "--instance-id", pair[0])
assert f"booted {pair[0]}" in out["Output"], out
types = {t["InstanceType"]: t for t in ec2.describe_instance_types()["InstanceTypes"]}
assert types["m1.small"]["VCpuInfo"]["DefaultVCpus"] == 1 and types["m1.small"]["MemoryInfo"]["SizeInMiB"] == 256
# Group web is a network: a tag from the configured range, a /27 slice, the frontend as gateway.
assert all(i["PrivateIpAddress"].startswith("172.31.0.") for i in inst), inst
status_code, body = raw({"Action": "DescribeNetworks", "Version": "2016-11-15"}, key, secret)
assert status_code == 200 and "<groupName>web</groupName>" in body and "<vlan>100</vlan>" in body, body
assert "<subnet>172.31.0.0/27</subnet>" in body and "<gateway>172.31.0.1</gateway>" in body, body
status_code, body = raw({"Action": "DescribeNetworks", "Version": "2016-11-15"},
                        os.environ["USER2_KEY"], os.environ["USER2_SECRET"])
assert status_code == 403 and "UnauthorizedOperation" in body, body
status = ec2.describe_instance_status(InstanceIds=pair)["InstanceStatuses"]
assert {s["InstanceStatus"]["Status"] for s in status} == {"ok"}, status
step("run two instances, filters, console output")

# A launch the node refuses ends terminated, and says why.
bad = ec2.run_instances(ImageId=emi, MinCount=1, MaxCount=1, UserData="fail-launch")["Instances"][0]["InstanceId"]
wait_state(ec2, [bad], "terminated")
reason = instances(ec2, InstanceIds=[bad])[0]["StateReason"]
assert "refused by the test node" in reason["Message"], reason
step("failed launch reason")

# Pagination over 7 running instances.
more = [i["InstanceId"] for i in ec2.run_instances(ImageId=emi, MinCount=5, MaxCount=5)["Instances"]]
wait_state(ec2, more, "running")
live = [{"Name": "instance-state-name", "Values": ["running"]}]
page = ec2.describe_instances(Filters=live, MaxResults=5)
first = [i["InstanceId"] for r in page["Reservations"] for i in r["Instances"]]
rest = ec2.describe_instances(Filters=live, MaxResults=5, NextToken=page["NextToken"])
second = [i["InstanceId"] for r in rest["Reservations"] for i in r["Instances"]]
assert len(first) == 5 and len(second) == 2 and "NextToken" not in rest, (first, second)
assert sorted(first + second) == sorted(pair + more)
paged = cli("ec2", "describe-instances", "--page-size", "5", "--filters", "Name=instance-state-name,Values=running")
assert sorted(i["InstanceId"] for r in paged["Reservations"] for i in r["Instances"]) == sorted(pair + more)
expect("InvalidParameterCombination", ec2.describe_instances, InstanceIds=pair, MaxResults=5)
step("pagination")

# Capacity: one vCPU left on the node.
msg = expect("InsufficientInstanceCapacity", ec2_once.run_instances, ImageId=emi, MinCount=1, MaxCount=1,
             InstanceType="m1.large")
assert "vCPUs ran out" in msg and "1 vCPU" in msg, msg
verbose = cli("ec2", "describe-availability-zones", "--zone-names", "verbose")["AvailabilityZones"]
small = [z for z in verbose if z["ZoneName"] == "|- m1.small"][0]
assert small["Messages"][0]["Message"].startswith("0001 / 0008"), small
step("capacity exhaustion and verbose zones")

# --- stop / start / reboot -----------------------------------------------------------------------
# Instance-store instances cannot be stopped (AWS: UnsupportedOperation), and a refused
# request leaves the instance running.
msg = expect("UnsupportedOperation", ec2.stop_instances, InstanceIds=[more[0]])
assert "does not have an 'ebs' root device type" in msg, msg
assert instances(ec2, InstanceIds=[more[0]])[0]["State"]["Name"] == "running"
ec2.start_instances(InstanceIds=[more[0]])
ec2.reboot_instances(InstanceIds=[more[0]])
expect("IncorrectInstanceState", ec2.reboot_instances, InstanceIds=[bad])
step("stop refused, start, reboot")

# --- addresses ------------------------------------------------------------------------------
# Every instance of a MANAGED network has a dynamic public address from the pool; an elastic
# IP replaces it, and when it leaves the instance gets a dynamic one again.
dynamic = instances(ec2, InstanceIds=[pair[0]])[0]["PublicIpAddress"]
addr = ec2.allocate_address()
assert addr["PublicIp"] != dynamic, (addr, dynamic)
ec2.associate_address(PublicIp=addr["PublicIp"], InstanceId=pair[0])
assert instances(ec2, InstanceIds=[pair[0]])[0]["PublicIpAddress"] == addr["PublicIp"]
got = cli("ec2", "describe-addresses", "--filters", f"Name=instance-id,Values={pair[0]}")["Addresses"]
assert got[0]["PublicIp"] == addr["PublicIp"] and got[0]["AllocationId"] == addr["AllocationId"], got
assert [i["InstanceId"] for i in instances(ec2, Filters=[{"Name": "ip-address", "Values": [addr["PublicIp"]]}])] == [pair[0]]
expect("InvalidAddress.NotFound", other.release_address, PublicIp=addr["PublicIp"])
ec2.disassociate_address(PublicIp=addr["PublicIp"])
again = instances(ec2, InstanceIds=[pair[0]])[0]["PublicIpAddress"]
assert again != addr["PublicIp"], again
ec2.release_address(AllocationId=addr["AllocationId"])
assert ec2.describe_addresses()["Addresses"] == []
step("addresses")

# --- volumes and snapshots ------------------------------------------------------------------
def volume(vid):
    return ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]


def attachment_state(vid):
    atts = volume(vid)["Attachments"]
    return atts[0]["State"] if atts else None


made = ec2.create_volume(Size=1, AvailabilityZone=zone)
vol = made["VolumeId"]
assert made["State"] == "creating", made
wait_volume(ec2, vol)
expect("InvalidParameterValue", ec2.create_volume, Size=1025, AvailabilityZone=zone)
att = ec2.attach_volume(VolumeId=vol, InstanceId=pair[1], Device="/dev/vdb")
assert att["State"] == "attaching", att
v = volume(vol)
assert v["State"] == "in-use" and v["Attachments"][0]["InstanceId"] == pair[1], v
# The test node's VMMs take a volume at once; attached only once the node says so.
wait_for("the node to hold the volume", lambda: attachment_state(vol) == "attached")
expect("VolumeInUse", ec2.delete_volume, VolumeId=vol)
expect("VolumeInUse", ec2.attach_volume, VolumeId=vol, InstanceId=pair[0], Device="/dev/vdb")
spare = ec2.create_volume(Size=1, AvailabilityZone=zone)["VolumeId"]
wait_volume(ec2, spare)
expect("InvalidParameterValue", ec2.attach_volume, VolumeId=spare, InstanceId=pair[1], Device="/dev/vdb")
ec2.delete_volume(VolumeId=spare)
det = ec2.detach_volume(VolumeId=vol)
assert det["State"] == "detaching", det
wait_volume(ec2, vol)
expect("IncorrectState", ec2.detach_volume, VolumeId=vol)
snap = ec2.create_snapshot(VolumeId=vol, Description="s")
assert snap["State"] == "pending", snap
snap = snap["SnapshotId"]
done = wait_snapshot(ec2, snap)
assert done["Progress"] == "100%", done
vol2 = cli("ec2", "create-volume", "--snapshot-id", snap, "--availability-zone", zone)
assert vol2["Size"] == 1 and vol2["SnapshotId"] == snap and vol2["State"] == "creating", vol2
wait_volume(ec2, vol2["VolumeId"])
ec2.delete_volume(VolumeId=vol2["VolumeId"])
step("volumes and snapshots")

# --- EBS-backed instances: booted from a volume made from the image's snapshot ---------------
expect("InvalidParameterCombination", ec2.register_image, Name="ebs-nokernel", RootDeviceName="/dev/vda",
       BlockDeviceMappings=[{"DeviceName": "/dev/vda", "Ebs": {"SnapshotId": snap}}])
ebs_emi = ec2.register_image(Name="ebs-root", RootDeviceName="/dev/vda", KernelId=eki, RamdiskId=eri,
                             BlockDeviceMappings=[{"DeviceName": "/dev/vda", "Ebs": {"SnapshotId": snap}}])["ImageId"]
img = ec2.describe_images(ImageIds=[ebs_emi])["Images"][0]
assert img["RootDeviceType"] == "ebs" and img["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"] == snap, img
expect("InvalidSnapshot.InUse", ec2.delete_snapshot, SnapshotId=snap)
ebs_i = ec2.run_instances(ImageId=ebs_emi, MinCount=1, MaxCount=1, TagSpecifications=[
    {"ResourceType": "volume", "Tags": [{"Key": "role", "Value": "root"}]}])["Instances"][0]
assert ebs_i["RootDeviceType"] == "ebs", ebs_i
ebs_i = ebs_i["InstanceId"]
wait_state(ec2, [ebs_i], "running")
desc = instances(ec2, InstanceIds=[ebs_i])[0]
root_vol = desc["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
assert desc["BlockDeviceMappings"][0]["DeviceName"] == "/dev/vda", desc
rv = volume(root_vol)
assert rv["SnapshotId"] == snap and rv["State"] == "in-use" and rv["Attachments"][0]["DeleteOnTermination"], rv
assert rv["Tags"] == [{"Key": "role", "Value": "root"}], rv
wait_for("the root volume attached", lambda: attachment_state(root_vol) == "attached")
expect("OperationNotPermitted", ec2.detach_volume, VolumeId=root_vol)
expect("UnsupportedOperation", ec2.stop_instances, InstanceIds=[pair[0]])
ec2.stop_instances(InstanceIds=[ebs_i])
wait_state(ec2, [ebs_i], "stopped")
assert volume(root_vol)["State"] == "in-use", "a stopped instance keeps its root volume"
ec2.start_instances(InstanceIds=[ebs_i])
wait_state(ec2, [ebs_i], "running")
ec2.terminate_instances(InstanceIds=[ebs_i])
wait_state(ec2, [ebs_i], "terminated")
expect("InvalidVolume.NotFound", ec2.describe_volumes, VolumeIds=[root_vol])
ec2.deregister_image(ImageId=ebs_emi)
step("EBS-backed: root volume from the snapshot, stop keeps it, start, terminate deletes it")
ec2.delete_snapshot(SnapshotId=snap)
ec2.delete_volume(VolumeId=vol)
expect("InvalidVolume.NotFound", ec2.describe_volumes, VolumeIds=[vol])
expect("InvalidVolumeID.Malformed", ec2.describe_volumes, VolumeIds=["vol-nope"])

# --- bad input and other users ------------------------------------------------------------------
expect("InvalidInstanceID.Malformed", ec2.describe_instances, InstanceIds=["bogus"])
expect("InvalidInstanceID.NotFound", ec2.describe_instances, InstanceIds=["i-0123456789abcdef0"])
expect("InvalidAMIID.NotFound", ec2.run_instances, ImageId="emi-00000000", MinCount=1, MaxCount=1)
expect("InvalidParameterValue", ec2.run_instances, ImageId=emi, MinCount=1, MaxCount=1, InstanceType="x9.huge")
expect("InvalidParameterValue", ec2_once.run_instances, ImageId=emi, MinCount=0, MaxCount=1)
expect("InvalidParameterValue", ec2.run_instances, ImageId=emi, MinCount=1, MaxCount=1,
       Placement={"AvailabilityZone": "atlantis"})
expect("InvalidKeyPair.NotFound", ec2.run_instances, ImageId=emi, MinCount=1, MaxCount=1, KeyName="nope")
expect("MissingParameter", ec2_once.run_instances, MinCount=1, MaxCount=1)
expect("InvalidInstanceID.NotFound", other.terminate_instances, InstanceIds=[pair[0]])
expect("InvalidInstanceID.NotFound", other.get_console_output, InstanceId=pair[0])
assert other.describe_instances()["Reservations"] == []
for params, code in [
    ({"Action": "RunInstances", "Version": "2016-11-15", "ImageId": emi, "MinCount": "1", "MaxCount": "1",
      "UserData": "***not base64***"}, "InvalidParameterValue"),
    ({"Action": "DescribeInstances", "Version": "2016-11-15", "MaxResults": "many"}, "InvalidParameterValue"),
    ({"Action": "DescribeInstances", "Version": "2016-11-15", "NextToken": "zz"}, "InvalidParameterValue"),
    ({"Action": "Frobnicate", "Version": "2016-11-15"}, "InvalidAction"),
    ({"Version": "2016-11-15"}, "MissingParameter"),
    ({"Action": "DescribeInstances", "Filter.1.Value.1": "x"}, "MissingParameter"),
    ({"Action": "TerminateInstances"}, "MissingParameter"),
]:
    status, body = raw(params, key, secret)
    assert status == 400 and f"<Code>{code}</Code>" in body, (params, status, body)
status, body = raw({"Action": "DescribeRegions", "Version": "2016-11-15"}, key, secret, method="GET")
assert status == 200 and "<regionName>us-east-1</regionName>" in body, (status, body)
status, body = raw({"Action": "DescribeRegions"}, key, "wrong-secret")
assert status == 403 and "<Code>SignatureDoesNotMatch</Code>" in body, (status, body)
assert cli("ec2", "describe-regions")["Regions"][0]["RegionName"] == "us-east-1"
step("bad input and isolation")

# --- kill -9 the frontend mid-flow ------------------------------------------------------------
before = {i["InstanceId"]: i["State"]["Name"] for i in instances(ec2)}
print("KILL", flush=True)
assert sys.stdin.readline().strip() == "RESTARTED"
after = {i["InstanceId"]: i["State"]["Name"] for i in instances(ec2)}
assert after == before, (before, after)
assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["k1"]
late = ec2.run_instances(ImageId=emi, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
wait_state(ec2, [late], "running")
step("records survive kill -9, node reconciles after restart")

# --- terminate everything ---------------------------------------------------------------------
everyone = pair + more + [late]
addr = ec2.allocate_address()
ec2.associate_address(AllocationId=addr["AllocationId"], InstanceId=late)
vol = ec2.create_volume(Size=2, AvailabilityZone=zone)["VolumeId"]
wait_volume(ec2, vol)
ec2.attach_volume(VolumeId=vol, InstanceId=late, Device="/dev/vdc")
expect("InvalidGroup.InUse", ec2.delete_security_group, GroupName="web")
out = ec2.terminate_instances(InstanceIds=everyone)["TerminatingInstances"]
assert {c["CurrentState"]["Name"] for c in out} == {"shutting-down"}, out
wait_state(ec2, everyone, "terminated")
_, body = raw({"Action": "DescribeNetworks", "Version": "2016-11-15"}, key, secret)
assert "<groupName>web</groupName>" not in body, f"web's network outlived its instances: {body}"
ec2.delete_security_group(GroupName="web")
ec2.deregister_image(ImageId=emi)
assert states(ec2, everyone) == {i: "terminated" for i in everyone}
left = ec2.describe_addresses(AllocationIds=[addr["AllocationId"]])["Addresses"][0]
assert "InstanceId" not in left and "AssociationId" not in left, left
assert ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["State"] == "available"
ec2.release_address(AllocationId=addr["AllocationId"])
ec2.delete_volume(VolumeId=vol)
step("terminate")

# --- no input gets a 5xx --------------------------------------------------------------------
import random  # noqa: E402

rng = random.Random(6)
junk = ["", "-1", "0", "99999999999999999999", "i-", "emi-", "sg-", "vol-x", "\x00", "é", "<x>", "a" * 300,
        "true", "maybe", "%ff", "emi-00000000", "i-0123456789abcdef0", "0.0.0.0/0", "tcp", "all"]
fields = ["ImageId", "InstanceId.1", "MinCount", "MaxCount", "InstanceType", "KeyName", "GroupName", "GroupId",
          "IpProtocol", "FromPort", "ToPort", "CidrIp", "IpPermissions.1.IpProtocol", "IpPermissions.1.IpRanges.1.CidrIp",
          "Filter.1.Name", "Filter.1.Value.1", "MaxResults", "NextToken", "PublicIp", "AllocationId", "VolumeId",
          "SnapshotId", "Size", "AvailabilityZone", "Device", "Name", "ImageLocation", "Attribute", "UserData",
          "PublicKeyMaterial", "LaunchPermission.Add.1.Group", "ZoneName.1", "Placement.AvailabilityZone", "DryRun"]
actions = sorted({op for op, _ in CHECK.responses})
sent = 0
for action in actions:
    for _ in range(12):
        params = {"Action": action, "Version": "2016-11-15"}
        for f in rng.sample(fields, rng.randint(0, 6)):
            params[f] = rng.choice(junk)
        status, body = raw(params, key, secret)
        sent += 1
        assert status < 500 or "<Code>InsufficientInstanceCapacity</Code>" in body, (params, status, body)
        assert body.startswith("<?xml"), (params, status, body)
step(f"{sent} junk requests over {len(actions)} actions: no 5xx")
print(CHECK.summary(), flush=True)
