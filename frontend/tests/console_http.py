"""The web console as a browser uses it, over real HTTPS verified with the frontend's CA
bundle (Python's default `ssl` context, which the harness points at it): sign-in (the form's
token, wrong passwords, the rate limit), CSRF on every POST, a key pair made in the console
and downloaded once then seen by boto3, escaping of what users type, one user's console
showing nothing of another's, an instance listed, its console output, Reboot (Stop refused
for an instance-store instance) and Terminate, credential downloads, and sign-out.
Usage: console_http.py ENDPOINT, with ALICE_PASSWORD, BOB_PASSWORD, ALICE_KEY, ALICE_SECRET
and ADMIN_PASSWORD_FILE in the environment."""

import html
import os
import urllib.parse

from console_client import header, request, sign_in, try_sign_in
from ec2_client import EP, client, instances, states, wait_for, wait_state


def key_names(key, secret):
    return sorted(k["KeyName"] for k in client(key=key, secret=secret).describe_key_pairs()["KeyPairs"])


alice_pw, bob_pw = os.environ["ALICE_PASSWORD"], os.environ["BOB_PASSWORD"]
alice_key, alice_secret = os.environ["ALICE_KEY"], os.environ["ALICE_SECRET"]

# `/_console/` sends a stranger to sign in; a page needs a session.
status, headers, _ = request("GET", "/_console/")
assert status == 303 and header(headers, "Location") == ["/_console/signin"], (status, headers)
status, _, css = request("GET", "/_console/style.css")
assert status == 200 and "@media" in css

# The sign-in form is CSRF-protected too: no token cookie, no sign-in.
status, _, page = request(
    "POST", "/_console/signin", None, {"csrf": "x", "user": "alice", "password": alice_pw}
)
assert status == 403, (status, page)

# A wrong password is refused (and counted).
status, _, page = try_sign_in("alice", "not alices password")
assert status == 401 and "Wrong user name or password" in page, (status, page)

# The admin signs in with the password first boot wrote; the users with theirs.
with open(os.environ["ADMIN_PASSWORD_FILE"]) as f:
    admin, _ = sign_in("admin", f.read().strip())
alice, alice_csrf = sign_in("alice", alice_pw)
bob, bob_csrf = sign_in("bob", bob_pw)

# A POST without (or with a wrong) CSRF token is refused and makes nothing.
for form in [{"name": "forged"}, {"name": "forged", "csrf": bob_csrf}]:
    status, _, page = request("POST", "/_console/keypairs", alice, form)
    assert status == 403, (status, page)
assert key_names(alice_key, alice_secret) == [], key_names(alice_key, alice_secret)

# A key pair made in the console: its private key is a download, once.
form = {"name": "console-key", "type": "ed25519", "csrf": alice_csrf}
status, headers, pem = request("POST", "/_console/keypairs", alice, form)
assert status == 200, (status, pem)
assert header(headers, "Content-Disposition") == ['attachment; filename="console-key.pem"'], headers
assert header(headers, "Cache-Control") == ["no-store"], headers
assert pem.startswith("-----BEGIN OPENSSH PRIVATE KEY-----"), pem
status, _, page = request("GET", "/_console/keypairs", alice)
assert status == 200 and "console-key" in page and "PRIVATE KEY" not in page, page
assert key_names(alice_key, alice_secret) == ["console-key"]

# What a user typed is escaped on the page.
evil = "<script>alert(1)</script>"
form = {"name": evil, "type": "ed25519", "csrf": alice_csrf}
status, headers, _ = request("POST", "/_console/keypairs", alice, form)
assert status == 200, status
status, _, page = request("GET", "/_console/keypairs", alice)
assert evil not in page and html.escape(evil, quote=False) in page, page
assert "<script" not in page, page
assert sorted(key_names(alice_key, alice_secret)) == sorted(["console-key", evil])

# Bob sees none of alice's key pairs, and cannot delete them.
status, _, page = request("GET", "/_console/keypairs", bob)
assert status == 200 and "console-key" not in page and "You have no key pairs" in page, page
status, _, page = request("GET", "/_console/instances", bob)
assert status == 200 and "You have no instances" in page, page
request("POST", "/_console/keypairs/delete", bob, {"name": "console-key", "csrf": bob_csrf})
assert "console-key" in key_names(alice_key, alice_secret)

# An instance alice launched (through the API; the test node runs it): listed with its
# state, addresses, zone and escaped tag for her, absent for bob; its console page reloads
# while it runs; Terminate in the console is EC2's TerminateInstances.
ec2 = client(key=alice_key, secret=alice_secret)
s3 = client("s3", key=alice_key, secret=alice_secret)
s3.create_bucket(Bucket="alice-img")
s3.put_object(Bucket="alice-img", Key="root.img", Body=os.urandom(4096))
emi = ec2.register_image(Name="root", ImageLocation="alice-img/root.img")["ImageId"]
tag = [{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": evil}]}]
inst = ec2.run_instances(ImageId=emi, MinCount=1, MaxCount=1, TagSpecifications=tag)
iid = inst["Instances"][0]["InstanceId"]
wait_state(ec2, [iid], "running")
described = instances(ec2, InstanceIds=[iid])[0]
status, _, page = request("GET", "/_console/instances", alice)
assert status == 200, (status, page)
for part in [iid, "running", described["InstanceType"], described["PrivateIpAddress"],
             described["Placement"]["AvailabilityZone"], html.escape(f"Name={evil}", quote=False),
             f"/_console/instances/{iid}/terminate"]:
    assert part in page, (part, page)
assert "<script" not in page, page
status, _, page = request("GET", "/_console/instances", bob)
assert iid not in page, page
status, _, page = request("GET", f"/_console/instances/{iid}/console", bob)
assert status == 400 and iid in page, (status, page)
status, _, page = request("GET", f"/_console/instances/{iid}/console", alice)
assert status == 200 and '<meta http-equiv="refresh" content="5">' in page, (status, page)
status, _, page = request("POST", f"/_console/instances/{iid}/terminate", bob, {"csrf": bob_csrf})
assert status == 400, (status, page)
assert states(ec2, [iid])[iid] == "running"

# Reboot, Stop and Start: the buttons EC2 would take. Her running instance is instance-store
# (its image is a registered file, no root volume), so it reboots but does not stop; Stop
# posted anyway is EC2's refusal on the page, and bob cannot reboot it. Reboot in the console
# is RebootInstances as alice: the test node reports the instance booted again (its console
# output counts the reboots it was asked for).
status, _, page = request("GET", "/_console/instances", alice)
assert f"/_console/instances/{iid}/reboot" in page, page
assert f"/{iid}/stop" not in page and f"/{iid}/start" not in page, page
status, _, page = request("POST", f"/_console/instances/{iid}/reboot", bob, {"csrf": bob_csrf})
assert status == 400 and iid in page, (status, page)
status, _, page = request("POST", f"/_console/instances/{iid}/stop", alice, {"csrf": alice_csrf})
assert status == 400, (status, page)
assert f"The instance '{iid}' does not have an 'ebs' root device type" in page, page
assert states(ec2, [iid])[iid] == "running"
status, headers, page = request("POST", f"/_console/instances/{iid}/reboot", alice, {"csrf": alice_csrf})
assert status == 303 and header(headers, "Location") == ["/_console/instances"], (status, page)
assert states(ec2, [iid])[iid] == "running"
wait_for("the test node's report of the reboot", lambda: f"booted {iid} (reboots 1)" in request(
    "GET", f"/_console/instances/{iid}/console", alice)[2])
for outcome, who in [("ok", "alice"), ("error", "bob")]:
    query = urllib.parse.urlencode({"user": who, "action": "RebootInstances", "outcome": outcome})
    status, _, page = request("GET", f"/_console/admin/audit?{query}", admin)
    assert status == 200 and iid in page and "No entry matches" not in page, (outcome, page)

status, headers, _ = request("POST", f"/_console/instances/{iid}/terminate", alice, {"csrf": alice_csrf})
assert status == 303, status
assert states(ec2, [iid])[iid] in ("shutting-down", "terminated"), states(ec2, [iid])
wait_state(ec2, [iid], "terminated")
status, _, page = request("GET", f"/_console/instances/{iid}/console", alice)
assert status == 200 and "http-equiv" not in page, (status, page)

# Credentials: her own key, the endpoint, the CA bundle.
status, headers, creds = request("GET", "/_console/credentials/aws-credentials", alice)
assert status == 200, status
assert creds == (
    f"[default]\naws_access_key_id = {alice_key}\naws_secret_access_key = {alice_secret}\n"
), creds
status, _, env = request("GET", "/_console/credentials/mallee-env.sh", alice)
assert f"export AWS_ENDPOINT_URL={EP}\n" in env, env
assert f"export AWS_ACCESS_KEY_ID={alice_key}\n" in env, env
status, _, ca = request("GET", "/_console/credentials/mallee-ca.pem", alice)
with open(os.environ["SSL_CERT_FILE"]) as f:
    assert ca == f.read()

# Signing out ends the session: the old cookie reaches no page.
status, _, _ = request("POST", "/_console/signout", alice, {"csrf": alice_csrf})
assert status == 303, status
status, headers, _ = request("GET", "/_console/keypairs", alice)
assert status == 303 and header(headers, "Location") == ["/_console/signin"], (status, headers)
status, _, _ = request("POST", "/_console/keypairs", alice, {"name": "late", "csrf": alice_csrf})
assert status == 403, status

# Four more wrong passwords make five in the window: then even the right one waits.
for _ in range(4):
    status, _, page = try_sign_in("alice", "still wrong")
    assert status == 401, (status, page)
status, headers, page = try_sign_in("alice", alice_pw)
assert status == 429 and "Too many failed sign-ins" in page, (status, page)
assert 0 < int(header(headers, "Retry-After")[0]) <= 300, headers

print("ok console")
