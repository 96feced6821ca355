"""Node admission as an admin sees it. A node whose MAC the frontend does not list has enrolled
and been refused (the harness did that before this script): DescribeNodes lists it as pending
with its claim (MAC, source address, attempts) and no capacity. bob (USER2_KEY/USER2_SECRET)
may not ApproveNode; the admin's ApproveNode lets it in: the harness enrolls it again from the
same MAC (`ENROLL`), and it is admitted and up; a second enrollment under its id without its
token is refused and kept as a claim while the node goes on working (`CLAIM`). RejectNode ends
its token and its next enrollment is refused (`REJECTED`). DescribeAuditLog shows each approve
and reject, bob's refused one too, with the node as resource. The node's id is NODE_ID. Usage:
ec2_node_admission.py ENDPOINT."""

import os
import sys
import xml.etree.ElementTree as ET

from ec2_client import admin_keys, raw, step

NS = {"ec2": "http://ec2.amazonaws.com/doc/2016-11-15/"}
MAC = "52:54:00:99:00:01"
key, secret = admin_keys()
bob = (os.environ["USER2_KEY"], os.environ["USER2_SECRET"])
node_id = os.environ["NODE_ID"]


def call(action, params, k=key, s=secret):
    status, body = raw({"Action": action, "Version": "2016-11-15", **params}, k, s)
    return status, ET.fromstring(body)


def text(e, path):
    return e.findtext(path, namespaces=NS)


def code(doc):
    return doc.findtext("Errors/Error/Code")


def node():
    status, doc = call("DescribeNodes", {"NodeId.1": node_id})
    assert status == 200, ET.tostring(doc)
    items = doc.findall("ec2:nodeSet/ec2:item", NS)
    assert len(items) == 1, ET.tostring(doc)
    return items[0]


def claim_of(n):
    c = n.find("ec2:claim", NS)
    if c is None:
        return None
    return {
        "state": text(c, "ec2:state"),
        "macs": [m.text for m in c.findall("ec2:macSet/ec2:item/ec2:mac", NS)],
        "source": text(c, "ec2:sourceAddress"),
        "attempts": int(text(c, "ec2:attempts")),
    }


def harness(ask, answer):
    print(ask, flush=True)
    got = sys.stdin.readline().strip()
    assert got == answer, f"harness answered {got!r} to {ask}"


n = node()
assert (text(n, "ec2:admission"), text(n, "ec2:state")) == ("pending", "down"), ET.tostring(n)
claim = claim_of(n)
assert claim == {"state": "pending", "macs": [MAC], "source": "127.0.0.1", "attempts": 1}, claim
assert n.find("ec2:cpus", NS) is None, ET.tostring(n)
step("the refused node is listed as pending with its claim")

status, doc = call("ApproveNode", {"NodeId": node_id}, *bob)
assert status == 403 and code(doc) == "UnauthorizedOperation", ET.tostring(doc)
assert "ApproveNode is for administrators" in doc.findtext("Errors/Error/Message"), ET.tostring(doc)
status, doc = call("RejectNode", {"NodeId": node_id}, *bob)
assert status == 403 and code(doc) == "UnauthorizedOperation", ET.tostring(doc)
status, doc = call("ApproveNode", {"NodeId": "node-9"})
assert status == 400 and code(doc) == "InvalidNodeID.NotFound", ET.tostring(doc)
status, doc = call("ApproveNode", {})
assert status == 400 and code(doc) == "MissingParameter", ET.tostring(doc)
assert text(node(), "ec2:admission") == "pending"
step("only an admin may approve, and only a node that exists")

status, doc = call("ApproveNode", {"NodeId": node_id})
assert status == 200, ET.tostring(doc)
assert (text(doc, "ec2:return"), text(doc, "ec2:nodeId"), text(doc, "ec2:admission")) == (
    "true", node_id, "approved"), ET.tostring(doc)
assert claim_of(node())["state"] == "approved"
harness("ENROLL", "ENROLLED")
n = node()
assert (text(n, "ec2:admission"), text(n, "ec2:state"), text(n, "ec2:cpus")) == ("admitted", "up", "2"), ET.tostring(n)
assert claim_of(n) is None, ET.tostring(n)
step("approved: the node enrolled and is up")

harness("CLAIM", "REFUSED")
n = node()
assert (text(n, "ec2:admission"), text(n, "ec2:state")) == ("admitted", "up"), ET.tostring(n)
assert claim_of(n) == {"state": "pending", "macs": [MAC], "source": "127.0.0.1", "attempts": 1}, ET.tostring(n)
step("a second claim on the live node's id is refused and kept for the admin")

status, doc = call("RejectNode", {"NodeId": node_id})
assert status == 200, ET.tostring(doc)
assert (text(doc, "ec2:admission"), text(doc, "ec2:state")) == ("rejected", "down"), ET.tostring(doc)
harness("REJECTED", "REFUSED")
assert text(node(), "ec2:admission") == "rejected"
step("rejected")

status, doc = call("DescribeAuditLog", {})
assert status == 200, ET.tostring(doc)
seen = []
for item in doc.findall("ec2:auditEventSet/ec2:item", NS):
    action = text(item, "ec2:action")
    if action in ("ApproveNode", "RejectNode"):
        resources = [r.text for r in item.findall("ec2:resourceSet/ec2:item/ec2:resourceId", NS)]
        seen.append((text(item, "ec2:user"), action, resources, text(item, "ec2:outcome"),
                     text(item, "ec2:errorCode")))
print(f"audited: {seen}")
assert seen == [
    ("admin", "RejectNode", [node_id], "ok", None),
    ("admin", "ApproveNode", [node_id], "ok", None),
    ("admin", "ApproveNode", [], "error", "MissingParameter"),
    ("admin", "ApproveNode", ["node-9"], "error", "InvalidNodeID.NotFound"),
    ("bob", "RejectNode", [node_id], "error", "UnauthorizedOperation"),
    ("bob", "ApproveNode", [node_id], "error", "UnauthorizedOperation"),
], seen
step("approvals and rejections are audited")
