"""Client helpers shared by the EC2 test scripts: boto3 clients and the AWS CLI (run
in-process through awscli's own driver) with every response checked by `ec2_model` (STS and
IAM ones by `query_model`), raw
SigV4-signed Query requests for input the SDKs refuse to send, and polling with deadlines."""

import base64
import contextlib
import io
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ec2_model import ModelChecker  # noqa: E402
from query_model import QueryModelChecker  # noqa: E402

EP = sys.argv[1]
CHECK = ModelChecker()
QUERY_CHECKS = {"sts": QueryModelChecker("sts"), "iam": QueryModelChecker("iam")}
NO_RETRY = Config(retries={"max_attempts": 1, "mode": "standard"}, parameter_validation=False)


def client(service="ec2", key=None, secret=None, retry=True):
    kw = {"endpoint_url": EP, "region_name": "us-east-1"}
    if key:
        kw.update(aws_access_key_id=key, aws_secret_access_key=secret)
    if not retry:
        kw["config"] = NO_RETRY
    c = boto3.client(service, **kw)
    if service == "ec2":
        CHECK.register(c.meta.events)
    if service in QUERY_CHECKS:
        QUERY_CHECKS[service].register(c.meta.events)
    return c


def cli(*args, expect_error=None):
    """Runs `aws --endpoint-url EP ARGS` in-process; returns parsed JSON output (or stderr
    text when an error is expected, asserting its code)."""
    from awscli.clidriver import create_clidriver

    driver = create_clidriver()
    driver.session.register("before-parse.ec2", CHECK)
    for checker in QUERY_CHECKS.values():
        checker.register(driver.session)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = driver.main(["--endpoint-url", EP, "--output", "json", *args])
    if expect_error:
        assert rc != 0, f"aws {args} succeeded, expected {expect_error}"
        assert expect_error in err.getvalue(), f"aws {args}: {err.getvalue()}"
        return err.getvalue()
    assert rc == 0, f"aws {args} failed rc={rc}: {err.getvalue()}"
    text = out.getvalue().strip()
    return json.loads(text) if text else None


def code_of(fn, *a, **kw):
    """The EC2 error code `fn` fails with (asserting it fails)."""
    try:
        fn(*a, **kw)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["Error"]["Message"]
    raise AssertionError(f"{fn.__name__} succeeded, expected an error")


def expect(code, fn, *a, **kw):
    got, msg = code_of(fn, *a, **kw)
    assert got == code, f"{fn.__name__}: expected {code}, got {got}: {msg}"
    return msg


def raw(params, key, secret, method="POST"):
    """A SigV4-signed EC2 Query request built by hand; returns (status, body text)."""
    body = "&".join(f"{k}={urllib.parse.quote(str(v), safe='')}" for k, v in params.items())
    if method == "GET":
        req = AWSRequest(method="GET", url=f"{EP}/?{body}", data=b"")
    else:
        req = AWSRequest(method=method, url=EP + "/", data=body.encode(),
                         headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    SigV4Auth(Credentials(key, secret), "ec2", "us-east-1").add_auth(req)
    prepared = req.prepare()
    r = urllib.request.Request(prepared.url, data=prepared.body, headers=dict(prepared.headers), method=method)
    try:
        with urllib.request.urlopen(r) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(what, fn, timeout=30):
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def wait_volume(ec2, vid, state="available"):
    """Waits until volume `vid` is in `state` (a new one is `creating` until its file exists)."""
    return wait_for(f"volume {vid} {state}", lambda: [
        v for v in ec2.describe_volumes(VolumeIds=[vid])["Volumes"] if v["State"] == state])[0]


def wait_snapshot(ec2, sid):
    """Waits until snapshot `sid` is completed (its chunks are in Walrus)."""
    return wait_for(f"snapshot {sid} completed", lambda: [
        s for s in ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"] if s["State"] == "completed"])[0]


def instances(ec2, **kw):
    out = []
    for r in ec2.describe_instances(**kw)["Reservations"]:
        out.extend(r["Instances"])
    return out


def states(ec2, ids):
    return {i["InstanceId"]: i["State"]["Name"] for i in instances(ec2, InstanceIds=ids)}


def wait_state(ec2, ids, state, timeout=30):
    return wait_for(f"{ids} {state}", lambda: all(s == state for s in states(ec2, ids).values()), timeout)


def b64(s):
    return base64.b64encode(s.encode()).decode()


def admin_keys():
    """(access key, secret) of the credentials file the harness points at."""
    import configparser

    cp = configparser.ConfigParser()
    cp.read(os.environ["AWS_SHARED_CREDENTIALS_FILE"])
    return cp["default"]["aws_access_key_id"], cp["default"]["aws_secret_access_key"]


def step(msg):
    print(f"ok {msg}", flush=True)
