"""A node that stops reporting is marked down: its instances say so (stateReason, impaired
status) and nothing more is scheduled on it; when it reports again, both clear. Prints
`PAUSE`/`RESUME` for the harness (which silences and revives the test node)."""

import os
import sys

from ec2_client import cli, client, expect, instances, step, wait_for, wait_state

ec2 = client()
ec2_once = client(retry=False)
s3 = client("s3")
s3.create_bucket(Bucket="img")
s3.put_object(Bucket="img", Key="root.img", Body=os.urandom(4096))
emi = ec2.register_image(Name="root", ImageLocation="img/root.img")["ImageId"]
iid = ec2.run_instances(ImageId=emi, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
wait_state(ec2, [iid], "running")
step("running")


def reason():
    return instances(ec2, InstanceIds=[iid])[0].get("StateReason", {})


def status():
    s = ec2.describe_instance_status(InstanceIds=[iid], IncludeAllInstances=True)["InstanceStatuses"]
    return s[0]["SystemStatus"]["Status"]


print("PAUSE", flush=True)
assert sys.stdin.readline().strip() == "PAUSED"
wait_for("the node to be marked down", lambda: reason().get("Code") == "Server.NodeDown")
assert "node-1" in reason()["Message"], reason()
assert status() == "impaired"
msg = expect("InsufficientInstanceCapacity", ec2_once.run_instances, ImageId=emi, MinCount=1, MaxCount=1)
assert "down" in msg, msg
step("silent node marked down")
print("RESUME", flush=True)
assert sys.stdin.readline().strip() == "RESUMED"
wait_for("the node to be back", lambda: "StateReason" not in instances(ec2, InstanceIds=[iid])[0])
assert status() == "ok"
assert cli("ec2", "describe-instances", "--instance-ids", iid)["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"
step("node back, instance running again")
