"""Instance attributes with the AWS CLI and boto3 against mallee-frontend, every response
model-checked: RunInstances' DisableApiTermination and InstanceInitiatedShutdownBehavior,
DescribeInstanceAttribute for every attribute name, ModifyInstanceAttribute in both parameter
forms (what only a stopped instance may change is refused on a running one), termination
protection honoured by TerminateInstances, security groups changed while the first group (the
network's) stays, delete-on-termination of an attached volume honoured at termination, unknown
names, other users. Asks the harness `GROUPS <id> <names>` (answered once the node was handed
the instance's new security groups in its metadata). Usage: ec2_instance_attributes.py ENDPOINT
(USER2_KEY/USER2_SECRET in the environment)."""

import base64
import os
import random
import sys

from ec2_client import (CHECK, admin_keys, cli, client, expect, instances, raw, states, step, wait_for,
                        wait_state, wait_volume)

ec2 = client()
ec2_once = client(retry=False)
other = client(key=os.environ["USER2_KEY"], secret=os.environ["USER2_SECRET"])
s3 = client("s3")
key, secret = admin_keys()


def harness(ask, answer):
    print(ask, flush=True)
    got = sys.stdin.readline().strip()
    assert got == answer, f"harness answered {got!r} to {ask}"


def attr(iid, name):
    """DescribeInstanceAttribute's answer for `name`, without InstanceId."""
    out = ec2.describe_instance_attribute(InstanceId=iid, Attribute=name)
    assert out.pop("InstanceId") == iid, out
    out.pop("ResponseMetadata")
    return out


s3.create_bucket(Bucket="img")
s3.put_object(Bucket="img", Key="root.img", Body=os.urandom(4096))
s3.put_object(Bucket="img", Key="vmlinuz", Body=b"k" * 64, Metadata={"mallee-image-type": "kernel"})
s3.put_object(Bucket="img", Key="vmlinuz-2", Body=b"K" * 64, Metadata={"mallee-image-type": "kernel"})
s3.put_object(Bucket="img", Key="initrd", Body=b"r" * 64, Metadata={"mallee-image-type": "ramdisk"})
eki = ec2.register_image(Name="kernel", ImageLocation="img/vmlinuz")["ImageId"]
eki2 = ec2.register_image(Name="kernel-2", ImageLocation="img/vmlinuz-2")["ImageId"]
eri = ec2.register_image(Name="initrd", ImageLocation="img/initrd")["ImageId"]
emi = ec2.register_image(Name="root", ImageLocation="img/root.img", KernelId=eki, RamdiskId=eri)["ImageId"]
web = ec2.create_security_group(GroupName="web", Description="w")["GroupId"]
extra = ec2.create_security_group(GroupName="extra", Description="e")["GroupId"]
elsewhere = ec2.create_security_group(GroupName="elsewhere", Description="o")["GroupId"]
zone = ec2.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]

# --- RunInstances' shutdown parameters and every attribute described ---------------------------
guarded = ec2.run_instances(ImageId=emi, MinCount=1, MaxCount=1, SecurityGroupIds=[web], UserData="#!/bin/sh\necho hi\n",
                            DisableApiTermination=True, InstanceInitiatedShutdownBehavior="terminate")
guarded = guarded["Instances"][0]["InstanceId"]
plain = cli("ec2", "run-instances", "--image-id", emi, "--count", "1")["Instances"][0]["InstanceId"]
wait_state(ec2, [guarded, plain], "running")
want = {
    "instanceType": {"InstanceType": {"Value": "m1.small"}},
    "kernel": {"KernelId": {"Value": eki}},
    "ramdisk": {"RamdiskId": {"Value": eri}},
    "userData": {"UserData": {"Value": base64.b64encode(b"#!/bin/sh\necho hi\n").decode()}},
    "disableApiTermination": {"DisableApiTermination": {"Value": True}},
    "instanceInitiatedShutdownBehavior": {"InstanceInitiatedShutdownBehavior": {"Value": "terminate"}},
    "rootDeviceName": {"RootDeviceName": {"Value": "/dev/vda"}},
    "blockDeviceMapping": {"BlockDeviceMappings": []},
    "groupSet": {"Groups": [{"GroupId": web, "GroupName": "web"}]},
    "productCodes": {"ProductCodes": []},
    "sourceDestCheck": {"SourceDestCheck": {"Value": True}},
    "ebsOptimized": {"EbsOptimized": {"Value": False}},
    "enaSupport": {"EnaSupport": {"Value": False}},
    "sriovNetSupport": {"SriovNetSupport": {}},
    "enclaveOptions": {"EnclaveOptions": {"Enabled": False}},
    "disableApiStop": {"DisableApiStop": {"Value": False}},
}
for name, value in want.items():
    assert attr(guarded, name) == value, (name, attr(guarded, name), value)
assert attr(plain, "disableApiTermination") == {"DisableApiTermination": {"Value": False}}
assert attr(plain, "instanceInitiatedShutdownBehavior") == {"InstanceInitiatedShutdownBehavior": {"Value": "stop"}}
assert attr(plain, "userData") == {"UserData": {}}, "no user data: an empty element"
out = cli("ec2", "describe-instance-attribute", "--instance-id", guarded, "--attribute", "userData")
assert base64.b64decode(out["UserData"]["Value"]) == b"#!/bin/sh\necho hi\n", out
assert instances(ec2, InstanceIds=[guarded])[0]["RootDeviceName"] == "/dev/vda"
expect("InvalidParameterValue", ec2_once.describe_instance_attribute, InstanceId=guarded, Attribute="colour")
expect("InvalidParameterValue", ec2_once.run_instances, ImageId=emi, MinCount=1, MaxCount=1,
       InstanceInitiatedShutdownBehavior="hibernate")
expect("InvalidInstanceID.NotFound", other.describe_instance_attribute, InstanceId=guarded, Attribute="userData")
expect("InvalidInstanceID.Malformed", ec2.describe_instance_attribute, InstanceId="bogus", Attribute="userData")
status, body = raw({"Action": "DescribeInstanceAttribute", "Version": "2016-11-15", "InstanceId": guarded}, key, secret)
assert status == 400 and "<Code>MissingParameter</Code>" in body, (status, body)
step("RunInstances' DisableApiTermination and InstanceInitiatedShutdownBehavior; all 16 attributes described")

# --- termination protection ---------------------------------------------------------------------
msg = expect("OperationNotPermitted", ec2.terminate_instances, InstanceIds=[plain, guarded])
assert f"The instance '{guarded}' may not be terminated" in msg, msg
assert states(ec2, [plain, guarded]) == {plain: "running", guarded: "running"}, "a refused terminate ended something"
cli("ec2", "terminate-instances", "--instance-ids", guarded, expect_error="OperationNotPermitted")
step("TerminateInstances refused with OperationNotPermitted while disableApiTermination is set; nothing ended")

# --- what only a stopped instance may change ------------------------------------------------------
for kw in [{"InstanceType": {"Value": "m1.large"}}, {"UserData": {"Value": b"new"}},
           {"Kernel": {"Value": eki2}}, {"Ramdisk": {"Value": eri}}]:
    msg = expect("IncorrectInstanceState", ec2.modify_instance_attribute, InstanceId=guarded, **kw)
    assert "is not in the 'stopped' state" in msg, msg
cli("ec2", "modify-instance-attribute", "--instance-id", guarded, "--attribute", "instanceType", "--value", "m1.large",
    expect_error="IncorrectInstanceState")
for name in ["instanceType", "kernel", "ramdisk", "userData"]:
    assert attr(guarded, name) == want[name], (name, attr(guarded, name))
expect("InvalidParameterValue", ec2.modify_instance_attribute, InstanceId=guarded, InstanceType={"Value": "x9.huge"})
expect("InvalidParameterValue", ec2.modify_instance_attribute, InstanceId=guarded, Kernel={"Value": eri})
expect("InvalidAMIID.NotFound", ec2.modify_instance_attribute, InstanceId=guarded, Kernel={"Value": "eki-00000000"})
step("instanceType, userData, kernel, ramdisk: IncorrectInstanceState on a running instance, nothing changed")

# --- shutdown behaviour, both forms; one attribute per call; unknown names ------------------------
cli("ec2", "modify-instance-attribute", "--instance-id", plain, "--instance-initiated-shutdown-behavior", "Value=terminate")
assert attr(plain, "instanceInitiatedShutdownBehavior") == want["instanceInitiatedShutdownBehavior"]
ec2.modify_instance_attribute(InstanceId=plain, Attribute="instanceInitiatedShutdownBehavior", Value="stop")
assert attr(plain, "instanceInitiatedShutdownBehavior")["InstanceInitiatedShutdownBehavior"]["Value"] == "stop"
expect("InvalidParameterValue", ec2.modify_instance_attribute, InstanceId=plain,
       InstanceInitiatedShutdownBehavior={"Value": "hibernate"})
expect("InvalidParameterCombination", ec2.modify_instance_attribute, InstanceId=plain,
       DisableApiTermination={"Value": True}, InstanceInitiatedShutdownBehavior={"Value": "stop"})
expect("InvalidParameterValue", ec2_once.modify_instance_attribute, InstanceId=plain, Attribute="colour", Value="red")
expect("MissingParameter", ec2.modify_instance_attribute, InstanceId=plain)
for kw, code in [({"SourceDestCheck": {"Value": False}}, "UnsupportedOperation"),
                 ({"EbsOptimized": {"Value": True}}, "UnsupportedOperation"),
                 ({"EnaSupport": {"Value": True}}, "UnsupportedOperation"),
                 ({"Attribute": "rootDeviceName", "Value": "/dev/sda1"}, "InvalidParameterCombination")]:
    expect(code, ec2.modify_instance_attribute, InstanceId=plain, **kw)
assert attr(plain, "disableApiTermination")["DisableApiTermination"]["Value"] is False, "a refused call changed it"
expect("InvalidInstanceID.NotFound", other.modify_instance_attribute, InstanceId=guarded,
       DisableApiTermination={"Value": False})
step("instanceInitiatedShutdownBehavior in both forms; one attribute per call; unknown and fixed attributes refused")

# --- security groups: the first (the network's) stays ---------------------------------------------
cli("ec2", "modify-instance-attribute", "--instance-id", guarded, "--groups", web, extra)
groups = [{"GroupId": web, "GroupName": "web"}, {"GroupId": extra, "GroupName": "extra"}]
assert attr(guarded, "groupSet") == {"Groups": groups}, attr(guarded, "groupSet")
assert instances(ec2, InstanceIds=[guarded])[0]["SecurityGroups"] == groups
harness(f"GROUPS {guarded} web,extra", "GROUPS")
msg = expect("InvalidParameterCombination", ec2.modify_instance_attribute, InstanceId=guarded, Groups=[elsewhere, web])
assert "another VLAN and subnet" in msg, msg
expect("InvalidGroupId.Malformed", ec2.modify_instance_attribute, InstanceId=guarded, Groups=["web"])
expect("InvalidGroup.NotFound", ec2.modify_instance_attribute, InstanceId=guarded, Groups=["sg-0123456789abcdef0"])
expect("InvalidGroup.InUse", ec2.delete_security_group, GroupId=extra)
ec2.modify_instance_attribute(InstanceId=guarded, Groups=[web])
assert attr(guarded, "groupSet") == {"Groups": groups[:1]}
harness(f"GROUPS {guarded} web", "GROUPS")
ec2.delete_security_group(GroupId=extra)
step("groupSet changed while its first group stays (node told); another first group: InvalidParameterCombination")

# --- block device mapping: attached volumes, delete on termination --------------------------------
kept = ec2.create_volume(Size=1, AvailabilityZone=zone)["VolumeId"]
doomed = ec2.create_volume(Size=1, AvailabilityZone=zone)["VolumeId"]
wait_volume(ec2, kept)
wait_volume(ec2, doomed)
ec2.attach_volume(VolumeId=doomed, InstanceId=guarded, Device="/dev/sdf")
ec2.attach_volume(VolumeId=kept, InstanceId=guarded, Device="/dev/sdg")
wait_for("both attachments attached (the test node's VMM holds them)", lambda: all(
    v["Attachments"][0]["State"] == "attached"
    for v in ec2.describe_volumes(VolumeIds=[kept, doomed])["Volumes"]))
bdm = attr(guarded, "blockDeviceMapping")["BlockDeviceMappings"]
assert [(b["DeviceName"], b["Ebs"]["VolumeId"], b["Ebs"]["DeleteOnTermination"]) for b in bdm] == \
    [("/dev/sdf", doomed, False), ("/dev/sdg", kept, False)], bdm
assert instances(ec2, InstanceIds=[guarded])[0]["BlockDeviceMappings"] == bdm
ec2.modify_instance_attribute(InstanceId=guarded, BlockDeviceMappings=[
    {"DeviceName": "/dev/sdf", "Ebs": {"DeleteOnTermination": True}}])
bdm = attr(guarded, "blockDeviceMapping")["BlockDeviceMappings"]
assert [b["Ebs"]["DeleteOnTermination"] for b in bdm] == [True, False], bdm
att = ec2.describe_volumes(VolumeIds=[doomed])["Volumes"][0]["Attachments"][0]
assert att["DeleteOnTermination"] is True, att
msg = expect("InvalidInstanceAttributeValue", ec2.modify_instance_attribute, InstanceId=guarded,
             BlockDeviceMappings=[{"DeviceName": "/dev/sdz", "Ebs": {"DeleteOnTermination": True}}])
assert "/dev/sdz" in msg, msg
step("blockDeviceMapping lists attached volumes; DeleteOnTermination set on one")

# --- protection off, then terminate: the flagged volume goes, the other stays ---------------------
cli("ec2", "modify-instance-attribute", "--instance-id", guarded, "--no-disable-api-termination")
assert attr(guarded, "disableApiTermination") == {"DisableApiTermination": {"Value": False}}
ec2.terminate_instances(InstanceIds=[guarded, plain])
wait_state(ec2, [guarded, plain], "terminated")
expect("InvalidVolume.NotFound", ec2.describe_volumes, VolumeIds=[doomed])
assert ec2.describe_volumes(VolumeIds=[kept])["Volumes"][0]["State"] == "available"
expect("IncorrectInstanceState", ec2.modify_instance_attribute, InstanceId=guarded, DisableApiTermination={"Value": True})
assert attr(guarded, "instanceType") == want["instanceType"], "a terminated instance is still described"
guarded2 = cli("ec2", "run-instances", "--image-id", emi, "--count", "1", "--disable-api-termination",
               "--instance-initiated-shutdown-behavior", "terminate")["Instances"][0]["InstanceId"]
assert attr(guarded2, "disableApiTermination") == {"DisableApiTermination": {"Value": True}}
ec2.modify_instance_attribute(InstanceId=guarded2, DisableApiTermination={"Value": False})
ec2.terminate_instances(InstanceIds=[guarded2])
wait_state(ec2, [guarded2], "terminated")
step("protection off: terminated; the delete-on-termination volume went with it, the other is available")

# --- no junk gets a 5xx -------------------------------------------------------------------------
live = ec2.run_instances(ImageId=emi, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
rng = random.Random(7)
junk = ["", "x", "true", "stop", "m1.large", eki, "sg-", web, live, "i-0123456789abcdef0", "userData", "groupSet",
        "blockDeviceMapping", "/dev/sdf", "\x00", "-1"]
fields = ["InstanceId", "Attribute", "Value", "InstanceType.Value", "UserData.Value", "Kernel.Value",
          "DisableApiTermination.Value", "InstanceInitiatedShutdownBehavior.Value", "GroupId.1",
          "BlockDeviceMapping.1.DeviceName", "BlockDeviceMapping.1.Ebs.DeleteOnTermination", "SourceDestCheck.Value"]
for action in ["DescribeInstanceAttribute", "ModifyInstanceAttribute"]:
    for _ in range(60):
        params = {"Action": action, "Version": "2016-11-15", "InstanceId": live}
        for f in rng.sample(fields, rng.randint(0, 4)):
            params[f] = rng.choice(junk)
        status, body = raw(params, key, secret)
        assert status < 500 and body.startswith("<?xml"), (params, status, body)
step("junk attribute requests: no 5xx")
print(CHECK.summary(), flush=True)
