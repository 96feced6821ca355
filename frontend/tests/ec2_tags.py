"""Tags with the AWS CLI and boto3 against mallee-frontend, every response model-checked:
TagSpecifications on every call that makes a taggable resource, CreateTags/DeleteTags (with and
without values), DescribeTags (filters, pagination), the tagSet of every Describe answer and the
tag:KEY / tag-key / tag-value filters of every Describe call, EC2's limits and error codes,
another user's resources, tags surviving a restart and going with their resource. Prints
`RESTART` and waits for `RESTARTED` (the harness restarts the frontend). Usage: ec2_tags.py
ENDPOINT (USER2_KEY/USER2_SECRET in the environment)."""

import os
import random
import sys
import tempfile

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ec2_client import CHECK, admin_keys, cli, client, expect, instances, raw, step, wait_state, wait_snapshot, wait_volume

ec2 = client()
ec2_once = client(retry=False)
other = client(key=os.environ["USER2_KEY"], secret=os.environ["USER2_SECRET"])
s3 = client("s3")
key, secret = admin_keys()


def tags(resource):
    """A Describe item's tags as a dict (EC2 leaves tagSet out when there are none)."""
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def spec(kind, **kv):
    return [{"ResourceType": kind, "Tags": [{"Key": k, "Value": v} for k, v in kv.items()]}]


def described(**kw):
    """DescribeTags as {(resource id, key): value}, every page."""
    out = {}
    for page in ec2.get_paginator("describe_tags").paginate(**kw):
        for t in page["Tags"]:
            out[(t["ResourceId"], t["Key"])] = (t["ResourceType"], t["Value"])
    return out


def ids_where(describe, list_key, id_key, filters):
    return sorted(r[id_key] for r in describe(Filters=filters)[list_key])


# --- TagSpecifications on every call that makes something taggable ----------------------------
s3.create_bucket(Bucket="img")
s3.put_object(Bucket="img", Key="root.img", Body=os.urandom(4096))
emi = ec2.register_image(Name="root", ImageLocation="img/root.img",
                         TagSpecifications=spec("image", os="debian"))["ImageId"]
zone = ec2.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]
run = ec2.run_instances(ImageId=emi, MinCount=2, MaxCount=2,
                        TagSpecifications=spec("instance", Name="web", env="prod") + spec("volume", disk="root"))
web = sorted(i["InstanceId"] for i in run["Instances"])
assert all(tags(i) == {"Name": "web", "env": "prod"} for i in run["Instances"]), run["Instances"]
db = cli("ec2", "run-instances", "--image-id", emi, "--count", "1", "--tag-specifications",
         '[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "db"}, {"Key": "empty", "Value": ""}]}]'
         )["Instances"][0]
assert tags(db) == {"Name": "db", "empty": ""}, db
db = db["InstanceId"]
plain = ec2.run_instances(ImageId=emi, MinCount=1, MaxCount=1)["Instances"][0]
assert "Tags" not in plain, plain
plain = plain["InstanceId"]
wait_state(ec2, web + [db, plain], "running")

vol = ec2.create_volume(Size=1, AvailabilityZone=zone, TagSpecifications=spec("volume", team="blue"))
assert tags(vol) == {"team": "blue"}, vol
vol = vol["VolumeId"]
wait_volume(ec2, vol)
snap = ec2.create_snapshot(VolumeId=vol, TagSpecifications=spec("snapshot", when="nightly"))
assert tags(snap) == {"when": "nightly"}, snap
snap = snap["SnapshotId"]
group = ec2.create_security_group(GroupName="tagged", Description="t", TagSpecifications=spec("security-group", tier="front"))
assert tags(group) == {"tier": "front"}, group
group = group["GroupId"]
alloc = ec2.allocate_address(TagSpecifications=spec("elastic-ip", use="lb"))["AllocationId"]
kp = ec2.create_key_pair(KeyName="k1", KeyType="ed25519", TagSpecifications=spec("key-pair", who="ops"))
assert tags(kp) == {"who": "ops"}, kp
kp = kp["KeyPairId"]
mine = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
    serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
with tempfile.NamedTemporaryFile(suffix=".pub") as f:
    f.write(mine + b" me@host\n")
    f.flush()
    imported = cli("ec2", "import-key-pair", "--key-name", "imported", "--public-key-material", f"fileb://{f.name}",
                   "--tag-specifications", "ResourceType=key-pair,Tags=[{Key=who,Value=me}]")
assert tags(imported) == {"who": "me"}, imported
imported = imported["KeyPairId"]
step("TagSpecifications on RunInstances, RegisterImage, CreateVolume, CreateSnapshot, CreateSecurityGroup, "
     "AllocateAddress, CreateKeyPair, ImportKeyPair")

# A type the call does not make is refused, and nothing is made.
before = len(instances(ec2))
for specs, what in [
    (spec("security-group", a="b"), "security-group"),
    (spec("vpc", a="b"), "vpc"),
    (spec("instance", **{"aws:x": "y"}), "aws:"),
    (spec("instance", a="b") + spec("instance", c="d"), "instance"),
    ([{"ResourceType": "instance", "Tags": []}], "at least one tag"),
]:
    msg = expect("InvalidParameterValue", ec2_once.run_instances, ImageId=emi, MinCount=1, MaxCount=1,
                 TagSpecifications=specs)
    assert what in msg, (what, msg)
assert len(instances(ec2)) == before, "a refused RunInstances launched something"
expect("InvalidParameterValue", ec2_once.create_volume, Size=1, AvailabilityZone=zone,
       TagSpecifications=spec("instance", a="b"))
assert len(ec2.describe_volumes()["Volumes"]) == 1, "a refused CreateVolume made a volume"
expect("InvalidParameterValue", ec2_once.create_security_group, GroupName="nope", Description="n",
       TagSpecifications=spec("key-pair", a="b"))
expect("InvalidGroup.NotFound", ec2.describe_security_groups, GroupNames=["nope"])
step("TagSpecifications of another type, with a reserved key or twice the same type: refused, nothing made")

# --- CreateTags on every kind of resource ----------------------------------------------------
everything = [vol, snap, group, alloc, kp, imported, emi, plain]
cli("ec2", "create-tags", "--resources", *everything, "--tags", "Key=team,Value=green", "Key=blank,Value=")
ec2.create_tags(Resources=[vol], Tags=[{"Key": "team", "Value": "blue"}])  # overwrites
all_tags = described()
for r in everything:
    assert all_tags[(r, "blank")][1] == "", (r, all_tags)
assert all_tags[(vol, "team")] == ("volume", "blue"), all_tags
kinds = {r: all_tags[(r, "team")][0] for r in everything}
assert kinds == {vol: "volume", snap: "snapshot", group: "security-group", alloc: "elastic-ip", kp: "key-pair",
                 imported: "key-pair", emi: "image", plain: "instance"}, kinds
step("CreateTags on instances, volumes, snapshots, images, groups, key pairs, elastic IPs")

# --- tagSet in every Describe and the tag filters of each ---------------------------------------
i = {x["InstanceId"]: x for x in instances(ec2)}
assert tags(i[web[0]]) == {"Name": "web", "env": "prod"} and tags(i[plain]) == {"team": "green", "blank": ""}, i
for filters, want in [
    ([{"Name": "tag:Name", "Values": ["web"]}], web),
    ([{"Name": "tag:Name", "Values": ["w*", "d?"]}], web + [db]),
    ([{"Name": "tag-key", "Values": ["env"]}], web),
    ([{"Name": "tag-value", "Values": ["db"]}], [db]),
    ([{"Name": "tag:empty", "Values": [""]}], [db]),
    ([{"Name": "tag-key", "Values": ["team"]}, {"Name": "tag:blank", "Values": [""]}], [plain]),
    ([{"Name": "tag:Name", "Values": ["web"]}, {"Name": "instance-id", "Values": [web[1]]}], [web[1]]),
    ([{"Name": "tag:name", "Values": ["web"]}], []),
]:
    got = sorted(x["InstanceId"] for x in instances(ec2, Filters=filters))
    assert got == sorted(want), (filters, got, want)
got = cli("ec2", "describe-instances", "--filters", "Name=tag:Name,Values=db")["Reservations"]
assert [x["InstanceId"] for r in got for x in r["Instances"]] == [db], got
green = [{"Name": "tag:team", "Values": ["green"]}]
blue = [{"Name": "tag:team", "Values": ["blue"]}]
assert ids_where(ec2.describe_volumes, "Volumes", "VolumeId", blue) == [vol]
assert ids_where(ec2.describe_volumes, "Volumes", "VolumeId", green) == []
assert tags(ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]) == {"team": "blue", "blank": ""}
assert ids_where(ec2.describe_snapshots, "Snapshots", "SnapshotId", [{"Name": "tag-key", "Values": ["when"]}]) == [snap]
assert ids_where(ec2.describe_snapshots, "Snapshots", "SnapshotId", [{"Name": "tag-value", "Values": ["nightly"]}]) == [snap]
assert ids_where(ec2.describe_images, "Images", "ImageId", [{"Name": "tag:os", "Values": ["deb*"]}]) == [emi]
assert tags(ec2.describe_images(ImageIds=[emi])["Images"][0])["os"] == "debian"
assert ids_where(ec2.describe_security_groups, "SecurityGroups", "GroupId", green) == [group]
assert tags(ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0])["tier"] == "front"
assert ids_where(ec2.describe_key_pairs, "KeyPairs", "KeyPairId", green) == sorted([kp, imported])
assert ids_where(ec2.describe_key_pairs, "KeyPairs", "KeyPairId", [{"Name": "tag:who", "Values": ["me"]}]) == [imported]
assert ids_where(ec2.describe_addresses, "Addresses", "AllocationId", [{"Name": "tag:use", "Values": ["lb"]}]) == [alloc]
assert tags(ec2.describe_addresses(AllocationIds=[alloc])["Addresses"][0])["use"] == "lb"
got = cli("ec2", "describe-volumes", "--filters", "Name=tag-key,Values=team")["Volumes"]
assert [v["VolumeId"] for v in got] == [vol], got
step("tagSet and tag:KEY / tag-key / tag-value filters on DescribeInstances, -Volumes, -Snapshots, -Images, "
     "-SecurityGroups, -KeyPairs, -Addresses")

# --- DescribeTags: filters and pagination ------------------------------------------------------
got = described(Filters=[{"Name": "resource-type", "Values": ["key-pair"]}, {"Name": "key", "Values": ["who"]}])
assert got == {(kp, "who"): ("key-pair", "ops"), (imported, "who"): ("key-pair", "me")}, got
got = described(Filters=[{"Name": "resource-id", "Values": [web[0]]}])
assert got == {(web[0], "Name"): ("instance", "web"), (web[0], "env"): ("instance", "prod")}, got
got = described(Filters=[{"Name": "value", "Values": ["gr*"]}])
assert set(got) == {(r, "team") for r in everything if r != vol}, got
got = described(Filters=[{"Name": "tag:Name", "Values": ["db"]}])
assert got == {(db, "Name"): ("instance", "db")}, got
total = len(described())
page = ec2.describe_tags(MaxResults=5)
assert len(page["Tags"]) == 5 and "NextToken" in page, page
seen, token = [], None
while True:
    p = ec2.describe_tags(MaxResults=5, **({"NextToken": token} if token else {}))
    seen += [(t["ResourceId"], t["Key"]) for t in p["Tags"]]
    token = p.get("NextToken")
    if not token:
        break
assert len(seen) == total and len(set(seen)) == total, (len(seen), total)
paged = cli("ec2", "describe-tags", "--page-size", "5")["Tags"]
assert len(paged) == total, (len(paged), total)
expect("InvalidParameterValue", ec2_once.describe_tags, MaxResults=4)
expect("InvalidParameterValue", ec2_once.describe_tags, NextToken="zz")
expect("InvalidParameterValue", ec2.describe_tags, Filters=[{"Name": "colour", "Values": ["x"]}])
step(f"DescribeTags filters key/value/resource-id/resource-type/tag:KEY and {total} tags over pages of 5")

# --- EC2's limits and errors ----------------------------------------------------------------
for bad_tags, code, what in [
    ([{"Key": "k" * 129, "Value": ""}], "InvalidParameterValue", "128"),
    ([{"Key": "", "Value": "v"}], "InvalidParameterValue", "128"),
    ([{"Key": "k", "Value": "v" * 257}], "InvalidParameterValue", "256"),
    ([{"Key": "aws:cloudformation:stack-name", "Value": "x"}], "InvalidParameterValue", "aws:"),
    ([{"Key": "AWS:x", "Value": "x"}], "InvalidParameterValue", "aws:"),
]:
    msg = expect(code, ec2_once.create_tags, Resources=[plain], Tags=bad_tags)
    assert what in msg, (what, msg)
ec2.create_tags(Resources=[plain], Tags=[{"Key": "é" * 128, "Value": "é" * 256}])  # characters, not bytes
ec2.create_tags(Resources=[plain], Tags=[{"Key": f"k{n}", "Value": ""} for n in range(47)])
assert len(tags(instances(ec2, InstanceIds=[plain])[0])) == 50
msg = expect("TagLimitExceeded", ec2.create_tags, Resources=[plain, db], Tags=[{"Key": "one-more", "Value": ""}])
assert "one-more" not in {k for (_, k) in described(Filters=[{"Name": "resource-id", "Values": [db]}])}, \
    "a refused CreateTags tagged another resource of the call"
ec2.create_tags(Resources=[plain], Tags=[{"Key": "k0", "Value": "overwritten"}])  # no new key: fine
for resource, code in [
    ("bogus", "InvalidID"),
    ("vpc-12345678", "InvalidID"),
    ("i-0123456789abcdef0", "InvalidInstanceID.NotFound"),
    ("vol-0123456789abcdef0", "InvalidVolume.NotFound"),
    ("snap-0123456789abcdef0", "InvalidSnapshot.NotFound"),
    ("emi-00000000", "InvalidAMIID.NotFound"),
    ("sg-0123456789abcdef0", "InvalidGroup.NotFound"),
    ("key-0123456789abcdef0", "InvalidKeyPair.NotFound"),
    ("eipalloc-0123456789abcdef0", "InvalidAllocationID.NotFound"),
]:
    expect(code, ec2.create_tags, Resources=[vol, resource], Tags=[{"Key": "half", "Value": "done"}])
    expect(code, ec2.delete_tags, Resources=[resource])
assert (vol, "half") not in described(), "a refused CreateTags tagged the call's good resource"
expect("InvalidInstanceID.NotFound", other.create_tags, Resources=[web[0]], Tags=[{"Key": "mine", "Value": ""}])
expect("InvalidVolume.NotFound", other.delete_tags, Resources=[vol])
assert other.describe_tags()["Tags"] == [], "another user sees our tags"
assert other.describe_instances(Filters=[{"Name": "tag:Name", "Values": ["web"]}])["Reservations"] == []
for params in [
    {"Action": "CreateTags", "Version": "2016-11-15", "Tag.1.Key": "a"},
    {"Action": "CreateTags", "Version": "2016-11-15", "ResourceId.1": plain},
    {"Action": "DeleteTags", "Version": "2016-11-15", "Tag.1.Key": "a"},
]:
    status, body = raw(params, key, secret)
    assert status == 400 and "<Code>MissingParameter</Code>" in body, (params, status, body)
step("limits (128/256 characters, 50 tags, aws: reserved), InvalidID and NotFound codes, other users")

# --- DeleteTags: without a value any value goes, with one only that value ----------------------
ec2.create_tags(Resources=[vol], Tags=[{"Key": "a", "Value": "1"}, {"Key": "b", "Value": ""}, {"Key": "c", "Value": "3"}])
ec2.delete_tags(Resources=[vol], Tags=[{"Key": "a"}, {"Key": "b", "Value": "x"}, {"Key": "c", "Value": ""}])
left = tags(ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0])
assert "a" not in left and left["b"] == "" and left["c"] == "3", left
ec2.delete_tags(Resources=[vol], Tags=[{"Key": "b", "Value": ""}, {"Key": "c", "Value": "3"}, {"Key": "nope"}])
left = tags(ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0])
assert "b" not in left and "c" not in left, left
cli("ec2", "delete-tags", "--resources", snap, "--tags", "Key=when,Value=weekly")
assert tags(ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0])["when"] == "nightly"
cli("ec2", "delete-tags", "--resources", snap, "--tags", "Key=when")
assert "when" not in tags(ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0])
ec2.delete_tags(Resources=[plain])  # no tags named: all of them
assert "Tags" not in instances(ec2, InstanceIds=[plain])[0]
expect("InvalidParameterValue", ec2.delete_tags, Resources=[vol], Tags=[{"Key": "aws:x"}])
step("DeleteTags: no value deletes any value, Value= only an empty one, a value only itself, none named all")

# --- stored: a restart keeps them ----------------------------------------------------------
before = described()
print("RESTART", flush=True)
assert sys.stdin.readline().strip() == "RESTARTED"
assert described() == before, "tags changed across a restart"
step(f"{len(before)} tags survive a restart")

# --- they go with their resource ----------------------------------------------------------------
gone = [vol, snap, group, alloc, kp, imported, emi]
wait_snapshot(ec2, snap)
ec2.delete_snapshot(SnapshotId=snap)
ec2.delete_volume(VolumeId=vol)
ec2.delete_security_group(GroupId=group)
ec2.release_address(AllocationId=alloc)
ec2.delete_key_pair(KeyName="k1")
ec2.delete_key_pair(KeyPairId=imported)
ec2.terminate_instances(InstanceIds=web + [db, plain])
wait_state(ec2, web + [db, plain], "terminated")
ec2.deregister_image(ImageId=emi)
left = {r for (r, _) in described()}
assert not left & set(gone), left & set(gone)
# Terminated instances stay visible with their tags, as on AWS.
assert tags(instances(ec2, InstanceIds=[db])[0]) == {"Name": "db", "empty": ""}
assert left == set(web + [db]), left
step("deleting a resource deletes its tags; terminated instances keep theirs")

# --- no junk gets a 5xx -------------------------------------------------------------------------
rng = random.Random(13)
junk = ["", "x", "i-", "aws:x", "i-0123456789abcdef0", web[0], "*", "\x00", "é" * 200, "-1", "1001", "zz"]
fields = ["ResourceId.1", "ResourceId.2", "Tag.1.Key", "Tag.1.Value", "Tag.2.Key", "Filter.1.Name",
          "Filter.1.Value.1", "MaxResults", "NextToken", "TagSpecification.1.ResourceType",
          "TagSpecification.1.Tag.1.Key"]
for action in ["CreateTags", "DeleteTags", "DescribeTags"]:
    for _ in range(40):
        params = {"Action": action, "Version": "2016-11-15"}
        for f in rng.sample(fields, rng.randint(0, 5)):
            params[f] = rng.choice(junk)
        status, body = raw(params, key, secret)
        assert status < 500 and body.startswith("<?xml"), (params, status, body)
step("junk tag requests: no 5xx")
print(CHECK.summary(), flush=True)
