"""The console's admin pages as a browser uses them: alice (a user) is refused every admin
page and her approve is refused; the admin sees the test node with its capacity and the
node waiting for admission, approves it, sees the networks page, creates a user who then
signs in, and filters the audit log; then disables a user made for this (erin): her keys are
refused by EC2, S3 and STS as an inactive key is, her open session ends and her sign-in is
refused as disabled; enabled again, all of it works with the same keys. The admin cannot
disable themself.
Usage: console_admin.py ENDPOINT, with ALICE_PASSWORD, ADMIN_PASSWORD_FILE, NODE_ID (the
test node, up) and PENDING_NODE_ID (a node that enrolled from a MAC not in `admit_macs`) in
the environment."""

import configparser
import html
import os
import re

from botocore.exceptions import ClientError

from console_client import header, request, sign_in, try_sign_in
from ec2_client import client

ADMIN_PAGES = ["/_console/admin/nodes", "/_console/admin/users", "/_console/admin/networks",
               "/_console/admin/audit"]
node, waiting = os.environ["NODE_ID"], os.environ["PENDING_NODE_ID"]


def node_card(page, node_id):
    """The HTML of one node's section of the nodes page."""
    m = re.search(rf'<section class="node" id="node-{re.escape(node_id)}">(.*?)</section>', page, re.S)
    assert m, (node_id, page)
    return m.group(1)


def audit_rows(page):
    """The body rows of the audit page, each a list of its cells' text."""
    body = page.split("<tbody>", 1)[1] if "<tbody>" in page else ""
    return [
        [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", body)
    ]


# Alice is no admin: no admin links, a 403 on every admin page, and her approve (with her own
# valid CSRF token) changes nothing.
alice, alice_csrf = sign_in("alice", os.environ["ALICE_PASSWORD"])
status, _, page = request("GET", "/_console/instances", alice)
assert "/_console/admin/" not in page, page
for path in ADMIN_PAGES:
    status, _, page = request("GET", path, alice)
    assert status == 403 and "for the cloud's admins" in page, (path, status, page)
status, _, page = request("POST", f"/_console/admin/nodes/{waiting}/approve", alice, {"csrf": alice_csrf})
assert status == 403, (status, page)

with open(os.environ["ADMIN_PASSWORD_FILE"]) as f:
    admin, admin_csrf = sign_in("admin", f.read().strip())
status, _, page = request("GET", "/_console/instances", admin)
for path in ADMIN_PAGES:
    assert f'href="{path}"' in page, (path, page)

# The nodes page: the test node up with its capacity (2 vCPUs, 1024 MiB) as bars, its zone's
# summary; the node alice could not approve still pending, with its buttons.
status, _, page = request("GET", "/_console/admin/nodes", admin)
assert status == 200, (status, page)
card = node_card(page, node)
for part in ['class="state ok">up<', "admitted", 'max="2" value="0"', "0 of 2 vCPUs",
             'max="1024" value="0"', "0 of 1024 MiB", "zone-a"]:
    assert part in card, (part, card)
assert 'class="zone"' in page and "1 of 2" in page, page
card = node_card(page, waiting)
for part in ["pending", "52:54:00:99:00:01", f"/_console/admin/nodes/{waiting}/approve"]:
    assert part in card, (part, card)
assert "style=" not in page and "<script" not in page, page

# The admin approves it: the page then shows it approved, without an Approve button.
status, headers, page = request("POST", f"/_console/admin/nodes/{waiting}/approve", admin, {"csrf": admin_csrf})
assert status == 303, (status, page)
status, _, page = request("GET", "/_console/admin/nodes", admin)
card = node_card(page, waiting)
assert "approved" in card and "/approve" not in card, card

# The networks page: the mode and the pool of public addresses, none in use yet.
status, _, page = request("GET", "/_console/admin/networks", admin)
assert status == 200 and "Public addresses" in page and "No public address is in use" in page, page

# A user made in the console signs in with the password given there.
form = {"csrf": admin_csrf, "name": "carol", "role": "user", "password": "carol's console password"}
status, _, page = request("POST", "/_console/admin/users", admin, form)
assert status == 303, (status, page)
carol, _ = sign_in("carol", "carol's console password")
status, _, page = request("GET", "/_console/admin/users", admin)
assert status == 200 and "carol" in page, page
status, _, page = request("GET", "/_console/admin/users", carol)
assert status == 403, status

# The audit filter: only the rows that match, newest first.
status, _, page = request("GET", "/_console/admin/audit?user=admin&action=ApproveNode&outcome=ok", admin)
assert status == 200, (status, page)
rows = audit_rows(page)
assert [r[1:6] for r in rows] == [["admin", "ApproveNode", waiting, "127.0.0.1", "ok"]], rows
status, _, page = request("GET", "/_console/admin/audit?action=ConsoleSignIn", admin)
rows = audit_rows(page)
assert [r[1] for r in rows] == ["carol", "admin", "alice"], rows
status, _, page = request("GET", "/_console/admin/audit?outcome=error", admin)
assert audit_rows(page) == [], page
status, _, page = request("GET", "/_console/admin/audit?user=carol", admin)
rows = audit_rows(page)
assert rows and all(r[1] == "carol" for r in rows), rows


def refused(call, code):
    try:
        call()
    except ClientError as e:
        assert e.response["Error"]["Code"] == code, e.response
    else:
        raise AssertionError(f"not refused with {code}")


def erin_calls(key, secret):
    """One EC2, S3 and STS call with erin's keys, each a function."""
    ec2, s3, sts = (client(s, key, secret, retry=False) for s in ("ec2", "s3", "sts"))
    return ec2.describe_key_pairs, s3.list_buckets, sts.get_caller_identity


def users_row(page, name):
    m = re.search(rf'<td data-label="Name">{re.escape(name)}</td>(.*?)</tr>', page, re.S)
    assert m, (name, page)
    return m.group(1)


# Disabling: erin, made for this, with her keys from her credentials file.
ERIN_PASSWORD = "erin's console password"
form = {"csrf": admin_csrf, "name": "erin", "role": "user", "password": ERIN_PASSWORD}
status, _, page = request("POST", "/_console/admin/users", admin, form)
assert status == 303, (status, page)
erin, _ = sign_in("erin", ERIN_PASSWORD)
status, _, creds = request("GET", "/_console/credentials/aws-credentials", erin)
assert status == 200, (status, creds)
parsed = configparser.ConfigParser()
parsed.read_string(creds)
erin_key = parsed["default"]["aws_access_key_id"]
erin_secret = parsed["default"]["aws_secret_access_key"]
ec2_call, s3_call, sts_call = erin_calls(erin_key, erin_secret)
ec2_call()
s3_call()
sts_call()
status, _, page = request("GET", "/_console/admin/users", admin)
row = users_row(page, "erin")
assert ">enabled<" in row and 'action="/_console/admin/users/disable"' in row, row
# The admin's own row has no Disable button, and a forged POST is refused.
assert "/disable" not in users_row(page, "admin"), page
status, _, page = request("POST", "/_console/admin/users/disable", admin, {"csrf": admin_csrf, "name": "admin"})
assert status == 400 and "cannot disable yourself" in page, (status, page)
# Without the CSRF token nothing changes.
status, _, page = request("POST", "/_console/admin/users/disable", admin, {"name": "erin"})
assert status == 403, (status, page)
ec2_call()

status, _, page = request("POST", "/_console/admin/users/disable", admin, {"csrf": admin_csrf, "name": "erin"})
assert status == 303, (status, page)
status, _, page = request("GET", "/_console/admin/users", admin)
row = users_row(page, "erin")
assert ">disabled<" in row and 'action="/_console/admin/users/enable"' in row, row
refused(ec2_call, "AuthFailure")
refused(s3_call, "InvalidAccessKeyId")
refused(sts_call, "InvalidClientTokenId")
status, headers, page = request("GET", "/_console/instances", erin)
assert status == 303 and header(headers, "Location") == ["/_console/signin"], (status, headers)
status, _, page = try_sign_in("erin", ERIN_PASSWORD)
assert status == 403 and "Your account is disabled" in page, (status, page)

status, _, page = request("POST", "/_console/admin/users/enable", admin, {"csrf": admin_csrf, "name": "erin"})
assert status == 303, (status, page)
ec2_call()
s3_call()
sts_call()
erin, _ = sign_in("erin", ERIN_PASSWORD)

print("ok console admin")
