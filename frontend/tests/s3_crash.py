"""Crash consistency, driven with the test harness: prints KILL when the frontend should be
killed with SIGKILL and restarted, then waits for RESTARTED on stdin.
1. kill -9 between parts of a multipart upload; after restart the upload goes on and completes.
2. kill -9 in the middle of a PutObject body; after restart no partial object is listed.
Usage: s3_crash.py ENDPOINT"""
import hashlib
import http.client
import os
import random
import sys
import urllib.parse

import boto3
from botocore.config import Config

ENDPOINT = sys.argv[1]
B = "crash-bucket"


def crash():
    print("KILL", flush=True)
    line = sys.stdin.readline().strip()
    assert line == "RESTARTED", line


def s3():
    return boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1",
                        config=Config(signature_version="s3v4", retries={"max_attempts": 3, "mode": "standard"}))


rng = random.Random(5)
part1 = rng.randbytes(5 << 20)
part2 = rng.randbytes(3 << 20)
keep = rng.randbytes(1 << 20)

c = s3()
c.create_bucket(Bucket=B)
c.put_object(Bucket=B, Key="kept", Body=keep)
up = c.create_multipart_upload(Bucket=B, Key="multi")["UploadId"]
e1 = c.upload_part(Bucket=B, Key="multi", UploadId=up, PartNumber=1, Body=part1)["ETag"]
crash()

c = s3()
assert [u["UploadId"] for u in c.list_multipart_uploads(Bucket=B)["Uploads"]] == [up]
assert [p["ETag"] for p in c.list_parts(Bucket=B, Key="multi", UploadId=up)["Parts"]] == [e1]
e2 = c.upload_part(Bucket=B, Key="multi", UploadId=up, PartNumber=2, Body=part2)["ETag"]
c.complete_multipart_upload(Bucket=B, Key="multi", UploadId=up, MultipartUpload={
    "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
got = c.get_object(Bucket=B, Key="multi")["Body"].read()
assert hashlib.sha256(got).digest() == hashlib.sha256(part1 + part2).digest()
print("ok multipart upload survives kill -9 and completes intact")

# A SigV4 presigned PUT (botocore-signed, unsigned payload) whose body we stop sending halfway.
url = urllib.parse.urlsplit(c.generate_presigned_url("put_object", Params={"Bucket": B, "Key": "partial"}, ExpiresIn=300))
conn = (http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection)(url.hostname, url.port)
conn.putrequest("PUT", url.path + "?" + url.query)
conn.putheader("Content-Length", str(64 << 20))
conn.endheaders()
chunk = rng.randbytes(1 << 20)
for _ in range(24):
    conn.send(chunk)
crash()
conn.close()

c = s3()
keys = [o["Key"] for o in c.list_objects_v2(Bucket=B).get("Contents", [])]
assert keys == ["kept", "multi"], keys
assert c.get_object(Bucket=B, Key="kept")["Body"].read() == keep
assert hashlib.sha256(c.get_object(Bucket=B, Key="multi")["Body"].read()).digest() == hashlib.sha256(part1 + part2).digest()
print("ok interrupted PutObject left no object; earlier objects intact")
body = rng.randbytes(2 << 20)
c.put_object(Bucket=B, Key="partial", Body=body)
assert c.get_object(Bucket=B, Key="partial")["Body"].read() == body
print("ok PutObject after restart")
