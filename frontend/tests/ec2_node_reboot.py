"""A node that registers again with a new boot id has rebooted: its instance says so
(stateReason Server.NodeRebooted, kept once it runs again) while the same boot id again (the
frontend restarted, the agent enrolled again) says nothing. DescribeNodes shows the node,
its boot id, instances and image cache to the admin only. Prints `RESTART` and `REBOOT` for
the harness (it restarts the frontend and re-registers the test node with the same boot id,
or re-registers it with a new one)."""

import os
import sys
import xml.etree.ElementTree as ET

from ec2_client import admin_keys, cli, client, instances, raw, step, wait_for, wait_state

ec2 = client()
s3 = client("s3")
s3.create_bucket(Bucket="img")
s3.put_object(Bucket="img", Key="root.img", Body=os.urandom(4096))
emi = ec2.register_image(Name="root", ImageLocation="img/root.img")["ImageId"]


def launch():
    iid = ec2.run_instances(ImageId=emi, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    wait_state(ec2, [iid], "running")
    return iid


def described(iid):
    return instances(ec2, InstanceIds=[iid])[0]


def harness(ask, answer):
    print(ask, flush=True)
    got = sys.stdin.readline().strip()
    assert got == answer, f"harness answered {got!r} to {ask}"


iid = launch()
assert "StateReason" not in described(iid), described(iid)
step("running")

harness("RESTART", "RESTARTED")
wait_state(ec2, [iid], "running")
assert "StateReason" not in described(iid), described(iid)
step("frontend restart and the same boot id again: no reboot reported")

harness("REBOOT", "REBOOTED")
reason = wait_for("the reboot reason", lambda: described(iid).get("StateReason"))
assert reason["Code"] == "Server.NodeRebooted", reason
assert reason["Message"].startswith("Server.NodeRebooted: node node-1 rebooted at "), reason
assert "restarted from its image (instance-store disk contents lost, EBS volumes kept)" in reason["Message"], reason
wait_state(ec2, [iid], "running")
# The reason stays once the node runs the instance again, in the AWS CLI's view too.
got = cli("ec2", "describe-instances", "--instance-ids", iid)["Reservations"][0]["Instances"][0]
assert got["State"]["Name"] == "running" and got["StateReason"] == reason, got
step("reboot reported and the instance running again")

# A later launch is a cache hit on the node, which DescribeNodes reports.
iid2 = launch()
assert "StateReason" not in described(iid2), described(iid2)
key, secret = admin_keys()
NS = {"ec2": "http://ec2.amazonaws.com/doc/2016-11-15/"}


def nodes(params, k=key, s=secret):
    status, body = raw({"Action": "DescribeNodes", "Version": "2016-11-15", **params}, k, s)
    return status, ET.fromstring(body)


def text(e, path):
    return e.findtext(path, namespaces=NS)


def cache_counts():
    _, doc = nodes({})
    return text(doc, "ec2:nodeSet/ec2:item/ec2:imageCache/ec2:hits")


wait_for("the cache hit to be reported", lambda: cache_counts() == "1")
status, doc = nodes({"NodeId.1": "node-1"})
assert status == 200, ET.tostring(doc)
items = doc.findall("ec2:nodeSet/ec2:item", NS)
assert len(items) == 1, ET.tostring(doc)
n = items[0]
assert text(n, "ec2:nodeId") == "node-1" and text(n, "ec2:zone") == "zone-a"
assert text(n, "ec2:state") == "up" and text(n, "ec2:bootId") == "test-boot-2", ET.tostring(n)
assert (text(n, "ec2:cpus"), text(n, "ec2:memoryMib"), text(n, "ec2:usedVcpus")) == ("2", "1024", "2")
ids = {text(i, "ec2:instanceId"): text(i, "ec2:state") for i in n.findall("ec2:instanceSet/ec2:item", NS)}
assert ids == {iid: "running", iid2: "running"}, ids
c = n.find("ec2:imageCache", NS)
assert (text(c, "ec2:storage"), text(c, "ec2:downloads"), text(c, "ec2:hits")) == ("disk", "1", "1"), ET.tostring(c)
assert [text(i, "ec2:size") for i in c.findall("ec2:imageSet/ec2:item", NS)] == ["4096"], ET.tostring(c)
status, doc = nodes({"NodeId.1": "node-9"})
assert status == 400 and text(doc, "Errors/Error/Code") == "InvalidNodeID.NotFound", ET.tostring(doc)
status, doc = nodes({}, os.environ["USER2_KEY"], os.environ["USER2_SECRET"])
assert status == 403 and text(doc, "Errors/Error/Code") == "UnauthorizedOperation", ET.tostring(doc)
step("DescribeNodes")

ec2.terminate_instances(InstanceIds=[iid, iid2])
wait_state(ec2, [iid, iid2], "terminated")
assert described(iid)["StateReason"]["Code"] == "Client.UserInitiatedShutdown", described(iid)
step("terminated")
