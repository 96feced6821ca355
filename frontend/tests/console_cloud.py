"""The console's images, security groups, volumes and snapshots, elastic IPs and access key
rotation as a browser uses them, over real HTTPS verified with the frontend's CA bundle: what
alice makes there is what boto3 (with her keys) sees, bob's pages show none of it, a POST
without the CSRF token changes nothing, what users typed is escaped, and a rotated key stops
working at once while the new one works.
Usage: console_cloud.py ENDPOINT, with ALICE_PASSWORD, BOB_PASSWORD, ALICE_KEY, ALICE_SECRET,
DORA_PASSWORD, DORA_KEY and DORA_SECRET in the environment. It signs in only with the right
passwords (console_http.py counts the failed ones)."""

import html
import os
import re

from botocore.exceptions import ClientError
from console_client import header, request, sign_in
from ec2_client import client, expect, instances, wait_for, wait_snapshot, wait_state, wait_volume

alice_key, alice_secret = os.environ["ALICE_KEY"], os.environ["ALICE_SECRET"]
alice, alice_csrf = sign_in("alice", os.environ["ALICE_PASSWORD"])
bob, bob_csrf = sign_in("bob", os.environ["BOB_PASSWORD"])
ec2 = client(key=alice_key, secret=alice_secret)
evil = "<script>alert(1)</script>"
escaped = html.escape(evil, quote=False)


def page(path, who):
    status, _, text = request("GET", path, who)
    assert status == 200, (path, status, text)
    assert "<script" not in text, text
    return text


def post(path, who, form, expect_status=303):
    status, headers, text = request("POST", path, who, form)
    assert status == expect_status, (path, status, text)
    return headers, text


def group_names(c):
    return [g["GroupName"] for g in c.describe_security_groups()["SecurityGroups"]]


# Every page is linked from the navigation.
nav = page("/_console/instances", alice)
for path in ["/_console/images", "/_console/groups", "/_console/volumes", "/_console/addresses"]:
    assert f'href="{path}"' in nav, (path, nav)

# A POST without (or with another session's) CSRF token is refused and makes nothing.
for form in [{"name": "forged", "description": "d"},
             {"name": "forged", "description": "d", "csrf": bob_csrf}]:
    post("/_console/groups", alice, form, 403)
    post("/_console/volumes", alice, {"size": "1", "zone": "zone-a", **form}, 403)
    post("/_console/addresses", alice, form, 403)
assert "forged" not in group_names(ec2)
assert ec2.describe_volumes()["Volumes"] == []
assert ec2.describe_addresses()["Addresses"] == []

# A security group with a rule, made in the console, is what boto3 sees; names escaped.
post("/_console/groups", alice, {"name": "console-web", "description": evil, "csrf": alice_csrf})
post("/_console/groups", alice, {"name": evil, "description": "typed by alice", "csrf": alice_csrf})
groups = {g["GroupName"]: g for g in ec2.describe_security_groups()["SecurityGroups"]}
web = groups["console-web"]
assert web["Description"] == evil, web
rule = {"group": web["GroupId"], "protocol": "tcp", "from": "22", "to": "", "cidr": "10.0.0.0/8"}
post("/_console/groups/authorize", alice, {**rule, "csrf": alice_csrf})
source = {"group": web["GroupId"], "protocol": "udp", "from": "53", "to": "53",
          "source_group": groups[evil]["GroupId"]}
post("/_console/groups/authorize", alice, {**source, "csrf": alice_csrf})
web = ec2.describe_security_groups(GroupIds=[web["GroupId"]])["SecurityGroups"][0]
perms = {(p["IpProtocol"], p.get("FromPort"), p.get("ToPort")): p for p in web["IpPermissions"]}
assert perms[("tcp", 22, 22)]["IpRanges"] == [{"CidrIp": "10.0.0.0/8"}], perms
assert [g["GroupId"] for g in perms[("udp", 53, 53)]["UserIdGroupPairs"]] == [groups[evil]["GroupId"]]
# The same rule again: EC2's refusal, said on the page.
_, text = post("/_console/groups/authorize", alice, {**rule, "csrf": alice_csrf}, 400)
assert "The rule was not added" in text and "already exists" in text, text
text = page("/_console/groups", alice)
for part in ["console-web", escaped, web["GroupId"], "10.0.0.0/8", "default"]:
    assert part in text, (part, text)
# Revoking the UDP rule with the fields the page gives.
post("/_console/groups/revoke", alice, {**source, "csrf": alice_csrf})
web = ec2.describe_security_groups(GroupIds=[web["GroupId"]])["SecurityGroups"][0]
assert [p["IpProtocol"] for p in web["IpPermissions"]] == ["tcp"], web
# Bob sees none of it, and his delete of alice's group is EC2's refusal.
text = page("/_console/groups", bob)
assert web["GroupId"] not in text and "console-web" not in text and escaped not in text, text
post("/_console/groups/delete", bob, {"group": web["GroupId"], "csrf": bob_csrf}, 400)
assert "console-web" in group_names(ec2)

# An image of hers and an instance of it on the test node, to attach and associate to.
s3 = client("s3", key=alice_key, secret=alice_secret)
s3.create_bucket(Bucket="alice-console-img")
s3.put_object(Bucket="alice-console-img", Key="root.img", Body=os.urandom(4096))
emi = ec2.register_image(Name="console-root", Description=evil,
                         ImageLocation="alice-console-img/root.img")["ImageId"]
iid = ec2.run_instances(ImageId=emi, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
wait_state(ec2, [iid], "running")

# A volume made in the console; once the storage keeper made it, a snapshot of it.
zone = ec2.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]
post("/_console/volumes", alice, {"size": "1", "zone": zone, "csrf": alice_csrf})
(vol,) = ec2.describe_volumes()["Volumes"]
assert vol["Size"] == 1 and vol["AvailabilityZone"] == zone, vol
vid = vol["VolumeId"]
_, text = post("/_console/volumes", alice, {"size": "4096", "zone": zone, "csrf": alice_csrf}, 400)
assert "The volume was not created" in text and "Size is 1..1024 GiB" in text, text
wait_volume(ec2, vid)
text = page("/_console/volumes", alice)
for part in [vid, "1 GiB", zone, "available"]:
    assert part in text, (part, text)
# Attached to her running instance in the console, detached again.
assert f'<option value="{iid}">' in text, text
post("/_console/volumes/attach", alice,
     {"volume": vid, "instance": iid, "device": "/dev/vdb", "csrf": alice_csrf})
(att,) = ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]["Attachments"]
assert att["InstanceId"] == iid and att["Device"] == "/dev/vdb", att
wait_for("the node to hold the volume", lambda: ec2.describe_volumes(VolumeIds=[vid])[
    "Volumes"][0]["Attachments"][0]["State"] == "attached")
text = page("/_console/volumes", alice)
assert f"{iid} /dev/vdb (attached)" in text and "in-use" in text, text
_, text = post("/_console/volumes/delete", alice, {"volume": vid, "csrf": alice_csrf}, 400)
assert "The volume was not deleted" in text and "attached" in text, text
post("/_console/volumes/detach", alice, {"volume": vid, "csrf": alice_csrf})
wait_volume(ec2, vid)
post("/_console/snapshots", alice, {"volume": vid, "description": evil, "csrf": alice_csrf})
(snap,) = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
assert snap["VolumeId"] == vid and snap["Description"] == evil, snap
sid = snap["SnapshotId"]
text = page("/_console/volumes", alice)
assert sid in text and escaped in text, text
done = wait_snapshot(ec2, sid)
text = page("/_console/volumes", alice)
assert re.search(rf"{sid}.*?completed.*?{done['Progress']}", text, re.S), text
text = page("/_console/volumes", bob)
assert vid not in text and sid not in text and "You have no volumes" in text, text
post("/_console/volumes/delete", bob, {"volume": vid, "csrf": bob_csrf}, 400)
post("/_console/snapshots/delete", alice, {"snapshot": sid, "csrf": alice_csrf})
assert ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"] == []

# An elastic IP: allocated in the console, seen by boto3, hidden from bob, released.
post("/_console/addresses", alice, {"csrf": alice_csrf})
(addr,) = ec2.describe_addresses()["Addresses"]
text = page("/_console/addresses", alice)
assert addr["PublicIp"] in text and addr["AllocationId"] in text, text
text = page("/_console/addresses", bob)
assert addr["PublicIp"] not in text and "You have no elastic IPs" in text, text
post("/_console/addresses/release", bob, {"allocation": addr["AllocationId"], "csrf": bob_csrf}, 400)
assert len(ec2.describe_addresses()["Addresses"]) == 1
# Associated with her instance in the console (its public address follows), then not.
assert f'<option value="{iid}">' in page("/_console/addresses", alice)
post("/_console/addresses/associate", alice,
     {"allocation": addr["AllocationId"], "instance": iid, "csrf": alice_csrf})
(addr,) = ec2.describe_addresses()["Addresses"]
assert addr["InstanceId"] == iid, addr
assert instances(ec2, InstanceIds=[iid])[0]["PublicIpAddress"] == addr["PublicIp"]
text = page("/_console/addresses", alice)
assert iid in text and "/_console/addresses/disassociate" in text, text
post("/_console/addresses/disassociate", alice, {"allocation": addr["AllocationId"], "csrf": alice_csrf})
(addr,) = ec2.describe_addresses()["Addresses"]
assert "InstanceId" not in addr or not addr["InstanceId"], addr
post("/_console/addresses/release", alice, {"allocation": addr["AllocationId"], "csrf": alice_csrf})
assert ec2.describe_addresses()["Addresses"] == []
ec2.terminate_instances(InstanceIds=[iid])
wait_state(ec2, [iid], "terminated")

# Images: what DescribeImages lists for her, with an escaped description; she deregisters
# her own in the console; bob does not see her private image.
text = page("/_console/images", alice)
for part in [emi, "console-root", escaped, "available", "x86_64", "/dev/vda"]:
    assert part in text, (part, text)
assert emi not in page("/_console/images", bob)
post("/_console/images/deregister", bob, {"image": emi, "csrf": bob_csrf}, 400)
assert [i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]] == [emi]
post("/_console/images/deregister", alice, {"image": emi, "csrf": alice_csrf})
assert ec2.describe_images(Owners=["self"])["Images"] == []

# The volume stays for the audit check; the group too.
assert ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]["State"] == "available"

# Rotating dora's access key: refused without the token; then the new credentials file is
# downloaded once, her old key fails at once and the new one works.
dora_key, dora_secret = os.environ["DORA_KEY"], os.environ["DORA_SECRET"]
dora, dora_csrf = sign_in("dora", os.environ["DORA_PASSWORD"])
old = client(key=dora_key, secret=dora_secret, retry=False)
old.describe_security_groups()
text = page("/_console/credentials", dora)
assert 'href="/_console/credentials/rotate"' in text, text
assert dora_key in page("/_console/credentials/rotate", dora)
post("/_console/credentials/rotate", dora, {}, 403)
old.describe_security_groups()
headers, creds = post("/_console/credentials/rotate", dora, {"csrf": dora_csrf}, 200)
assert header(headers, "Content-Disposition") == ['attachment; filename="credentials"'], headers
assert header(headers, "Cache-Control") == ["no-store"], headers
m = re.fullmatch(r"\[default\]\naws_access_key_id = (\S+)\naws_secret_access_key = (\S+)\n", creds)
assert m, creds
new_key, new_secret = m.groups()
assert new_key != dora_key and new_secret != dora_secret
expect("AuthFailure", old.describe_security_groups)
new = client(key=new_key, secret=new_secret, retry=False)
assert "default" in group_names(new)
try:
    client("s3", key=dora_key, secret=dora_secret, retry=False).list_buckets()
    raise AssertionError("S3 took the old key")
except ClientError as e:
    assert e.response["Error"]["Code"] == "InvalidAccessKeyId", e.response
# Her session goes on; the credentials download is the new pair.
status, _, now = request("GET", "/_console/credentials/aws-credentials", dora)
assert status == 200 and now == creds, (status, now)

print("ok console cloud")
