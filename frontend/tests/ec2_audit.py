"""The audit log as an admin reads it: bob (USER2_KEY/USER2_SECRET) makes a security group and a
key pair, fails to delete a group that does not exist, looks at his groups, makes a bucket and
puts an object; a request with his key and a wrong secret asks for a key pair. DescribeAuditLog
(admin only, signed by hand as no AWS client models it) then shows each change with its user,
action, resource ids, source address, outcome, error code and request id, newest first and in
pages, and none of the reads; bob is refused it. Usage: ec2_audit.py ENDPOINT."""

import os
import xml.etree.ElementTree as ET

from ec2_client import admin_keys, client, expect, raw, step

NS = {"ec2": "http://ec2.amazonaws.com/doc/2016-11-15/"}
key, secret = admin_keys()
bob_key, bob_secret = os.environ["USER2_KEY"], os.environ["USER2_SECRET"]
bob = client(key=bob_key, secret=bob_secret)
bob_s3 = client("s3", key=bob_key, secret=bob_secret)

# --- the calls ----------------------------------------------------------------------------------
made = bob.create_security_group(GroupName="audited", Description="audit test")
gid, group_rid = made["GroupId"], made["ResponseMetadata"]["RequestId"]
kp = bob.create_key_pair(KeyName="audited-key")["KeyPairId"]
expect("InvalidGroup.NotFound", bob.delete_security_group, GroupName="no-such-group")
bob.describe_security_groups()
bob_s3.create_bucket(Bucket="audited-bucket")
bob_s3.put_object(Bucket="audited-bucket", Key="a/b.txt", Body=b"audited")
bob_s3.get_object(Bucket="audited-bucket", Key="a/b.txt")["Body"].read()
forged = client(key=bob_key, secret="not-bobs-secret", retry=False)
expect("SignatureDoesNotMatch", forged.create_key_pair, KeyName="forged-key")
step("calls made")


# --- reading the log ----------------------------------------------------------------------------
def audit_log(params, k=key, s=secret):
    status, body = raw({"Action": "DescribeAuditLog", "Version": "2016-11-15", **params}, k, s)
    return status, ET.fromstring(body)


def events(doc):
    out = []
    for item in doc.findall("ec2:auditEventSet/ec2:item", NS):
        e = {name: item.findtext(f"ec2:{name}", namespaces=NS) for name in (
            "eventId", "time", "user", "action", "sourceAddress", "outcome", "errorCode", "requestId")}
        e["resources"] = [r.text for r in item.findall("ec2:resourceSet/ec2:item/ec2:resourceId", NS)]
        out.append(e)
    return out, doc.findtext("ec2:nextToken", namespaces=NS)


status, doc = audit_log({})
assert status == 200, ET.tostring(doc)
log, token = events(doc)
assert token is None, token
print("audit log:")
for e in log:
    print(f"  {e}")
ids = [int(e["eventId"]) for e in log]
assert ids == sorted(ids, reverse=True), ids


def find(user, action):
    got = [e for e in log if e["user"] == user and e["action"] == action]
    assert len(got) == 1, f"{user} {action}: {got}"
    return got[0]


e = find("bob", "CreateSecurityGroup")
assert (e["resources"], e["sourceAddress"], e["outcome"], e["errorCode"]) == (
    ["audited", gid], "127.0.0.1", "ok", None), e
assert e["requestId"] == group_rid and e["time"].endswith("Z"), e
e = find("bob", "CreateKeyPair")
assert (e["resources"], e["outcome"]) == (["audited-key", kp], "ok"), e
e = find("bob", "DeleteSecurityGroup")
assert (e["resources"], e["outcome"], e["errorCode"]) == (
    ["no-such-group"], "error", "InvalidGroup.NotFound"), e
e = find("bob", "CreateBucket")
assert (e["resources"], e["sourceAddress"], e["outcome"]) == (["audited-bucket"], "127.0.0.1", "ok"), e
e = find("bob", "PutObject")
assert (e["resources"], e["sourceAddress"], e["outcome"]) == (["audited-bucket/a/b.txt"], "127.0.0.1", "ok"), e
e = find("-", "CreateKeyPair")
assert (e["resources"], e["outcome"], e["errorCode"]) == (["forged-key"], "error", "SignatureDoesNotMatch"), e
reads = [e for e in log if e["action"].startswith(("Describe", "Get"))]
assert not reads, reads
step("changes recorded with user, resources, source and outcome; reads are not")

pages, token = [], None
while True:
    status, doc = audit_log({"MaxResults": 5, **({"NextToken": token} if token else {})})
    assert status == 200, ET.tostring(doc)
    page, token = events(doc)
    assert len(page) <= 5, page
    pages += page
    if not token:
        break
assert [e["eventId"] for e in pages] == [e["eventId"] for e in log], (pages, log)
step(f"pages of 5 walk the whole log ({len(log)} entries)")

status, doc = audit_log({}, bob_key, bob_secret)
assert status == 403, ET.tostring(doc)
assert doc.findtext("Errors/Error/Code") == "UnauthorizedOperation", ET.tostring(doc)
assert "DescribeAuditLog is for administrators" in doc.findtext("Errors/Error/Message")
for bad in ({"MaxResults": 4}, {"MaxResults": 1001}, {"NextToken": "x"}):
    status, doc = audit_log(bad)
    assert (status, doc.findtext("Errors/Error/Code")) == (400, "InvalidParameterValue"), (bad, ET.tostring(doc))
step("bob refused; bad MaxResults and NextToken refused")
