"""Instance metadata options with the AWS CLI and boto3 against mallee-frontend, every response
model-checked: RunInstances' MetadataOptions, DescribeInstances' MetadataOptions, and
ModifyInstanceMetadataOptions, whose State stays `pending` until the node reports that the
instance's VMM serves the new options, then `applied`. Bad values are refused and nothing is
launched. Asks the harness (which drives the test node) `HOLD` (keep reporting the options each
VMM has), `SEEN <id>` (answered once the node was handed the new options and reported the old
ones), `RELEASE` (report what it was handed) and `ADDRESS <id> <ip>` (answered once the node was
handed the instance's new public-ipv4). Usage: ec2_metadata.py ENDPOINT (USER2_KEY/USER2_SECRET
in the environment)."""

import os
import sys
import time

from ec2_client import CHECK, admin_keys, cli, client, expect, instances, raw, step, wait_for, wait_state

ec2 = client()
ec2_once = client(retry=False)
other = client(key=os.environ["USER2_KEY"], secret=os.environ["USER2_SECRET"])
s3 = client("s3")
s3.create_bucket(Bucket="img")
s3.put_object(Bucket="img", Key="root.img", Body=os.urandom(4096))
emi = ec2.register_image(Name="root", ImageLocation="img/root.img")["ImageId"]

DEFAULTS = {"HttpTokens": "optional", "HttpPutResponseHopLimit": 1, "HttpEndpoint": "enabled",
            "HttpProtocolIpv6": "disabled", "InstanceMetadataTags": "disabled"}


def harness(ask, answer):
    print(ask, flush=True)
    got = sys.stdin.readline().strip()
    assert got == answer, f"harness answered {got!r} to {ask}"


def options(iid):
    return instances(ec2, InstanceIds=[iid])[0]["MetadataOptions"]


def applied(iid, want):
    """Waits until the instance's options are `want` and applied."""
    return wait_for(f"{iid} options {want} applied", lambda: options(iid) == {"State": "applied", **want})


# --- RunInstances ---------------------------------------------------------------------------
run = cli("ec2", "run-instances", "--image-id", emi, "--count", "1",
          "--metadata-options", "HttpTokens=required,HttpPutResponseHopLimit=2,HttpEndpoint=enabled")
iid = run["Instances"][0]["InstanceId"]
strict = {**DEFAULTS, "HttpTokens": "required", "HttpPutResponseHopLimit": 2}
assert run["Instances"][0]["MetadataOptions"] == {"State": "pending", **strict}, run["Instances"][0]
wait_state(ec2, [iid], "running")
applied(iid, strict)
print(f"strict {iid}", flush=True)
plain = ec2.run_instances(ImageId=emi, MinCount=1, MaxCount=1)["Instances"][0]
assert plain["MetadataOptions"] == {"State": "pending", **DEFAULTS}, plain
applied(plain["InstanceId"], DEFAULTS)
step("RunInstances with and without MetadataOptions; applied once the node reports them")

# --- bad values -------------------------------------------------------------------------------
before = len(instances(ec2))
for opts, code in [
    ({"HttpTokens": "sometimes"}, "InvalidParameterValue"),
    ({"HttpEndpoint": "on"}, "InvalidParameterValue"),
    ({"HttpPutResponseHopLimit": 0}, "InvalidParameterValue"),
    ({"HttpPutResponseHopLimit": 65}, "InvalidParameterValue"),
    ({"HttpProtocolIpv6": "maybe"}, "InvalidParameterValue"),
    ({"HttpProtocolIpv6": "enabled"}, "UnsupportedOperation"),
    ({"InstanceMetadataTags": "enabled"}, "UnsupportedOperation"),
]:
    msg = expect(code, ec2_once.run_instances, ImageId=emi, MinCount=1, MaxCount=1, MetadataOptions=opts)
    assert next(iter(opts)) in msg, msg
    expect(code, ec2_once.modify_instance_metadata_options, InstanceId=iid, **opts)
assert len(instances(ec2)) == before, "a refused RunInstances launched something"
assert options(iid) == {"State": "applied", **strict}, "a refused modify changed something"
cli("ec2", "run-instances", "--image-id", emi, "--count", "1", "--metadata-options", "HttpTokens=always",
    expect_error="InvalidParameterValue")
expect("InvalidInstanceID.NotFound", other.modify_instance_metadata_options, InstanceId=iid, HttpTokens="optional")
expect("InvalidInstanceID.Malformed", ec2.modify_instance_metadata_options, InstanceId="bogus", HttpTokens="optional")
key, secret = admin_keys()
status, body = raw({"Action": "ModifyInstanceMetadataOptions", "Version": "2016-11-15", "HttpTokens": "optional"},
                   key, secret)
assert status == 400 and "<Code>MissingParameter</Code>" in body, (status, body)
step("bad values refused, nothing launched or changed")

# --- ModifyInstanceMetadataOptions: pending until the node's VMM serves them ------------------
harness("HOLD", "HELD")
r = ec2.modify_instance_metadata_options(InstanceId=iid, HttpEndpoint="disabled")
off = {**strict, "HttpEndpoint": "disabled"}
assert r["InstanceId"] == iid and r["InstanceMetadataOptions"] == {"State": "pending", **off}, r
harness(f"SEEN {iid}", "SEEN")
for _ in range(4):  # several reports of the old options: still pending
    assert options(iid) == {"State": "pending", **off}, options(iid)
    time.sleep(0.5)
harness("RELEASE", "RELEASED")
applied(iid, off)
out = cli("ec2", "modify-instance-metadata-options", "--instance-id", iid, "--http-tokens", "optional",
          "--http-endpoint", "enabled", "--http-put-response-hop-limit", "64")
back = {**DEFAULTS, "HttpPutResponseHopLimit": 64}
assert out["InstanceMetadataOptions"] == {"State": "pending", **back}, out
applied(iid, back)
same = ec2.modify_instance_metadata_options(InstanceId=iid, HttpPutResponseHopLimit=64)
assert same["InstanceMetadataOptions"] == {"State": "applied", **back}, "nothing changed: still applied"
step("ModifyInstanceMetadataOptions pending until the node reports, then applied")

# --- a new public address reaches the node's desired state (the agent pushes it to the VMM) ----
addr = ec2.allocate_address()["PublicIp"]
ec2.associate_address(PublicIp=addr, InstanceId=iid)
harness(f"ADDRESS {iid} {addr}", "ADDRESSED")
step("AssociateAddress hands the node the new public-ipv4")

# --- terminated ---------------------------------------------------------------------------------
ids = [iid, plain["InstanceId"]]
ec2.terminate_instances(InstanceIds=ids)
wait_state(ec2, ids, "terminated")
expect("IncorrectInstanceState", ec2.modify_instance_metadata_options, InstanceId=iid, HttpTokens="required")
assert options(iid)["State"] == "pending", "nothing serves a terminated instance's options"
ec2.release_address(PublicIp=addr)
step("terminated: no modify, nothing applied")
print(CHECK.summary(), flush=True)
