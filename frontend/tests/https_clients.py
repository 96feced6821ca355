"""The AWS CLI and boto3 over https against a mallee-frontend with [tls] on: with its CA bundle
an S3 put/get and an EC2 describe succeed; with another CA's bundle, or with none (the system
store), each fails certificate verification.
Usage: https_clients.py ENDPOINT   (env: CA_BUNDLE, the frontend's; OTHER_CA, another CA's)"""
import os
import subprocess
import sys
import tempfile

import boto3
import botocore.exceptions
from botocore.config import Config

ENDPOINT = sys.argv[1]
CA_BUNDLE = os.environ["CA_BUNDLE"]
OTHER_CA = os.environ["OTHER_CA"]
NO_RETRY = Config(retries={"max_attempts": 1, "mode": "standard"})
BUCKET = "https-bucket"
assert ENDPOINT.startswith("https://"), ENDPOINT


def aws(bundle, *args, check=True):
    env = dict(os.environ, AWS_MAX_ATTEMPTS="1")
    env.pop("AWS_CA_BUNDLE", None)
    if bundle:
        env["AWS_CA_BUNDLE"] = bundle
    r = subprocess.run(["aws", "--endpoint-url", ENDPOINT, *args], capture_output=True, text=True, env=env)
    if check and r.returncode != 0:
        sys.exit(f"aws {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def refused_by_the_cli(bundle, *args):
    r = aws(bundle, *args, check=False)
    assert r.returncode != 0, f"aws {args} succeeded with CA bundle {bundle}: {r.stdout}"
    assert "CERTIFICATE_VERIFY_FAILED" in r.stderr or "SSL validation failed" in r.stderr, r.stderr
    return r.stderr.strip().splitlines()[-1]


def client(service, verify):
    return boto3.client(service, endpoint_url=ENDPOINT, region_name="us-east-1", config=NO_RETRY, verify=verify)


def refused_by_boto3(service, verify, call):
    try:
        call(client(service, verify))
    except botocore.exceptions.SSLError as e:
        assert "CERTIFICATE_VERIFY_FAILED" in str(e), e
        return
    raise AssertionError(f"boto3 {service} succeeded with verify={verify}")


# --- the AWS CLI with the frontend's CA bundle
with tempfile.TemporaryDirectory() as tmp:
    up, down = os.path.join(tmp, "up.bin"), os.path.join(tmp, "down.bin")
    body = os.urandom(200_000)
    with open(up, "wb") as f:
        f.write(body)
    aws(CA_BUNDLE, "s3api", "create-bucket", "--bucket", BUCKET)
    aws(CA_BUNDLE, "s3api", "put-object", "--bucket", BUCKET, "--key", "cli.bin", "--body", up)
    aws(CA_BUNDLE, "s3api", "get-object", "--bucket", BUCKET, "--key", "cli.bin", down)
    with open(down, "rb") as f:
        assert f.read() == body, "the CLI got other bytes back"
print("ok aws cli s3 put/get over https")
regions = aws(CA_BUNDLE, "ec2", "describe-regions", "--output", "text").stdout
assert "us-east-1" in regions, regions
print("ok aws cli ec2 describe-regions over https")

# --- boto3 with verify=the bundle
s3 = client("s3", CA_BUNDLE)
s3.put_object(Bucket=BUCKET, Key="boto.txt", Body=b"over tls")
assert s3.get_object(Bucket=BUCKET, Key="boto.txt")["Body"].read() == b"over tls"
print("ok boto3 s3 put/get over https")
ec2 = client("ec2", CA_BUNDLE)
assert any(r["RegionName"] == "us-east-1" for r in ec2.describe_regions()["Regions"])
print("ok boto3 ec2 describe_regions over https")

# --- another CA, and none: certificate verification fails
for bundle, what in [(OTHER_CA, "another CA"), (None, "the system CAs")]:
    last = refused_by_the_cli(bundle, "s3api", "list-objects-v2", "--bucket", BUCKET)
    refused_by_the_cli(bundle, "ec2", "describe-regions")
    print(f"ok aws cli refuses the server with {what}: {last}")
    verify = bundle if bundle else True
    refused_by_boto3("s3", verify, lambda c: c.list_objects_v2(Bucket=BUCKET))
    refused_by_boto3("ec2", verify, lambda c: c.describe_regions())
    print(f"ok boto3 refuses the server with {what}")
