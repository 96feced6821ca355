"""boto3 against a running mallee-frontend: objects, listings, multipart (upload_fileobj with
threads), copy, conditionals, aws-chunked uploads as botocore sends them over TLS, per-user
isolation, and the error codes for bad credentials, skew, tampering and expiry.
Usage: s3_boto.py ENDPOINT   (env: USER2_KEY, USER2_SECRET for a second, non-admin user)"""
import datetime
import hashlib
import io
import os
import socket
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request

import boto3
import botocore.auth
import botocore.httpchecksum
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = sys.argv[1]
NO_RETRY = Config(retries={"max_attempts": 1, "mode": "standard"})


def client(key=None, secret=None, config=NO_RETRY):
    kw = {}
    if key:
        kw = {"aws_access_key_id": key, "aws_secret_access_key": secret}
    return boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1", config=config, **kw)


def error_code(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError(f"{fn.__name__} succeeded but should have failed")


s3 = client()
admin_key = s3._request_signer._credentials.access_key
B = "boto-bucket"
s3.create_bucket(Bucket=B)
assert error_code(s3.create_bucket, Bucket=B) == "BucketAlreadyOwnedByYou"
assert error_code(s3.create_bucket, Bucket="Bad_Name") == "InvalidBucketName"
s3.head_bucket(Bucket=B)
assert s3.get_bucket_location(Bucket=B).get("LocationConstraint") in (None, "")
print("ok buckets")

# --- objects
s3.put_object(Bucket=B, Key="hello.txt", Body=b"hello world", ContentType="text/plain", Metadata={"colour": "blue"})
o = s3.get_object(Bucket=B, Key="hello.txt")
assert o["Body"].read() == b"hello world"
assert o["ContentType"] == "text/plain" and o["Metadata"] == {"colour": "blue"}, o
etag = o["ETag"]
assert etag == '"%s"' % hashlib.md5(b"hello world").hexdigest()
h = s3.head_object(Bucket=B, Key="hello.txt")
assert h["ContentLength"] == 11
assert s3.get_object(Bucket=B, Key="hello.txt", Range="bytes=6-")["Body"].read() == b"world"
assert error_code(s3.get_object, Bucket=B, Key="hello.txt", IfNoneMatch=etag) == "304"
assert error_code(s3.get_object, Bucket=B, Key="hello.txt", IfMatch='"nope"') == "PreconditionFailed"
assert s3.get_object(Bucket=B, Key="hello.txt", IfMatch=etag)["Body"].read() == b"hello world"
future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
assert error_code(s3.get_object, Bucket=B, Key="hello.txt", IfModifiedSince=future) == "304"
assert error_code(s3.get_object, Bucket=B, Key="missing") == "NoSuchKey"
assert error_code(s3.get_object, Bucket=B, Key="hello.txt", Range="bytes=100-") == "InvalidRange"
print("ok put/get/head, range, conditionals")

s3.copy_object(Bucket=B, Key="copy.txt", CopySource={"Bucket": B, "Key": "hello.txt"})
assert s3.get_object(Bucket=B, Key="copy.txt")["Body"].read() == b"hello world"
print("ok copy")

# --- listings with awkward keys, delimiter and pagination
keys = ["dir/a b+c%.txt", "dir/sub/x", "dir/sub/y", "dir/ü.bin", "top1", "top2"]
for k in keys:
    s3.put_object(Bucket=B, Key=k, Body=k.encode())
listed = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=B, Prefix="dir/", PaginationConfig={"PageSize": 2}):
    listed += [c["Key"] for c in page.get("Contents", [])]
assert listed == sorted(k for k in keys if k.startswith("dir/")), listed
r = s3.list_objects_v2(Bucket=B, Prefix="dir/", Delimiter="/")
assert [c["Key"] for c in r["Contents"]] == ["dir/a b+c%.txt", "dir/ü.bin"], r
assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["dir/sub/"], r
v1 = []
for page in s3.get_paginator("list_objects").paginate(Bucket=B, PaginationConfig={"PageSize": 3}):
    v1 += [c["Key"] for c in page.get("Contents", [])]
assert v1 == sorted(keys + ["copy.txt", "hello.txt"]), v1
assert s3.get_object(Bucket=B, Key="dir/a b+c%.txt")["Body"].read() == b"dir/a b+c%.txt"
d = s3.delete_objects(Bucket=B, Delete={"Objects": [{"Key": k} for k in keys]})
assert len(d["Deleted"]) == len(keys), d
assert [c["Key"] for c in s3.list_objects_v2(Bucket=B)["Contents"]] == ["copy.txt", "hello.txt"]
print("ok listings v1/v2 (prefix, delimiter, pagination, url encoding), delete_objects")

# --- multipart through the transfer manager, with threads
data = os.urandom(40 << 20)
tc = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=4, use_threads=True)
s3.upload_fileobj(io.BytesIO(data), B, "big.bin", Config=tc)
head = s3.head_object(Bucket=B, Key="big.bin")
assert head["ContentLength"] == len(data) and head["ETag"].endswith('-5"'), head
out = io.BytesIO()
s3.download_fileobj(B, "big.bin", out, Config=tc)
assert hashlib.sha256(out.getvalue()).digest() == hashlib.sha256(data).digest()
print("ok upload_fileobj/download_fileobj 40 MiB, 4 threads")

# --- low-level multipart: list parts/uploads, abort, and a refused completion
up = s3.create_multipart_upload(Bucket=B, Key="mp")["UploadId"]
e1 = s3.upload_part(Bucket=B, Key="mp", UploadId=up, PartNumber=1, Body=b"a" * (5 << 20))["ETag"]
e2 = s3.upload_part(Bucket=B, Key="mp", UploadId=up, PartNumber=2, Body=b"b" * 10)["ETag"]
assert [p["PartNumber"] for p in s3.list_parts(Bucket=B, Key="mp", UploadId=up)["Parts"]] == [1, 2]
assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=B)["Uploads"]] == [up]
bad = {"Parts": [{"PartNumber": 1, "ETag": e2}, {"PartNumber": 2, "ETag": e2}]}
assert error_code(s3.complete_multipart_upload, Bucket=B, Key="mp", UploadId=up, MultipartUpload=bad) == "InvalidPart"
s3.abort_multipart_upload(Bucket=B, Key="mp", UploadId=up)
assert error_code(s3.list_parts, Bucket=B, Key="mp", UploadId=up) == "NoSuchUpload"
assert "Uploads" not in s3.list_multipart_uploads(Bucket=B)
print("ok multipart list/abort/InvalidPart")

# --- UploadPartCopy from a small object (its bytes live in the state database) and a range of it
up = s3.create_multipart_upload(Bucket=B, Key="from-small")["UploadId"]
c1 = s3.upload_part_copy(Bucket=B, Key="from-small", UploadId=up, PartNumber=1,
                         CopySource={"Bucket": B, "Key": "hello.txt"}, CopySourceRange="bytes=6-10")
done = {"Parts": [{"PartNumber": 1, "ETag": c1["CopyPartResult"]["ETag"]}]}
s3.complete_multipart_upload(Bucket=B, Key="from-small", UploadId=up, MultipartUpload=done)
assert s3.get_object(Bucket=B, Key="from-small")["Body"].read() == b"world"
s3.delete_object(Bucket=B, Key="from-small")
print("ok upload_part_copy from a small object")

# --- aws-chunked: what botocore sends over TLS (STREAMING-UNSIGNED-PAYLOAD-TRAILER with a CRC32
# trailer); against a plain-HTTP endpoint it is made to believe the endpoint is https
seen = []
real_urlparse = botocore.httpchecksum.urlparse
botocore.httpchecksum.urlparse = lambda u: real_urlparse(u.replace("http://", "https://", 1))
tc_client = client()
tc_client.meta.events.register("before-send.s3.*", lambda request, **_: seen.append(request.headers.get("X-Amz-Content-SHA256")))
payload = os.urandom(3 << 20)
tc_client.put_object(Bucket=B, Key="chunked.bin", Body=io.BytesIO(payload))
tc_client.upload_fileobj(io.BytesIO(data[: 20 << 20]), B, "chunked-mp.bin", Config=tc)
botocore.httpchecksum.urlparse = real_urlparse
assert b"STREAMING-UNSIGNED-PAYLOAD-TRAILER" in seen, seen
assert s3.get_object(Bucket=B, Key="chunked.bin")["Body"].read() == payload
assert s3.get_object(Bucket=B, Key="chunked-mp.bin")["Body"].read() == data[: 20 << 20]
print("ok aws-chunked unsigned-with-trailer from botocore (PutObject and UploadPart)")

# --- error codes
assert error_code(client(admin_key, "wrong-secret").list_buckets) == "SignatureDoesNotMatch"
assert error_code(client("MKIANOSUCHKEY0000000", "x").list_buckets) == "InvalidAccessKeyId"
real_now = botocore.auth.get_current_datetime
botocore.auth.get_current_datetime = lambda: real_now() - datetime.timedelta(minutes=20)
try:
    assert error_code(client().list_buckets) == "RequestTimeTooSkewed"
    v4 = client(config=Config(signature_version="s3v4", retries={"max_attempts": 1}))
    url = v4.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "hello.txt"}, ExpiresIn=60)
finally:
    botocore.auth.get_current_datetime = real_now
assert "X-Amz-Signature=" in url, url
try:
    urllib.request.urlopen(url)
    raise AssertionError("expired presigned URL was accepted")
except urllib.error.HTTPError as e:
    body = e.read().decode()
    assert e.code == 403 and "<Code>AccessDenied</Code>" in body and "expired" in body, body
# Both presigned forms botocore makes: SigV4 when asked, SigV2 by default for S3.
v4 = client(config=Config(signature_version="s3v4"))
for c in (v4, s3):
    fresh = c.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "hello.txt"}, ExpiresIn=60)
    assert urllib.request.urlopen(fresh).read() == b"hello world", fresh
put_url = v4.generate_presigned_url("put_object", Params={"Bucket": B, "Key": "presigned-put"}, ExpiresIn=60)
urllib.request.urlopen(urllib.request.Request(put_url, data=b"via presigned put", method="PUT"))
assert s3.get_object(Bucket=B, Key="presigned-put")["Body"].read() == b"via presigned put"
# A single PUT claiming more than S3's 5 GiB is refused before its body is read, and the object
# that PUT named was not made.
big_url = urllib.parse.urlsplit(
    v4.generate_presigned_url("put_object", Params={"Bucket": B, "Key": "too-big"}, ExpiresIn=60))
tcp = socket.create_connection((big_url.hostname, big_url.port), timeout=30)
# Over TLS when the endpoint is https, verified with Python's default CAs (SSL_CERT_FILE).
with (ssl.create_default_context().wrap_socket(tcp, server_hostname=big_url.hostname)
      if big_url.scheme == "https" else tcp) as sock:
    sock.sendall(f"PUT {big_url.path}?{big_url.query} HTTP/1.1\r\nHost: {big_url.netloc}\r\n"
                 f"Content-Length: {6 << 30}\r\n\r\n".encode())
    answer = b""
    while b"</Error>" not in answer and (got := sock.recv(65536)):
        answer += got
    answer = answer.decode()
assert answer.startswith("HTTP/1.1 400") and "<Code>EntityTooLarge</Code>" in answer, answer
assert error_code(s3.head_object, Bucket=B, Key="too-big") == "404"


def tamper(request, **_):
    request.body = b"HELLO WORLD"


# A signed payload (over https botocore would send PutObject unsigned, with a CRC32 trailer), so a
# changed body breaks its x-amz-content-sha256.
tampering = client(config=Config(retries={"max_attempts": 1}, s3={"payload_signing_enabled": True},
                                 request_checksum_calculation="when_required"))
tampering.meta.events.register("before-send.s3.PutObject", tamper)
assert error_code(tampering.put_object, Bucket=B, Key="tampered", Body=b"hello world") == "XAmzContentSHA256Mismatch"
assert error_code(s3.head_object, Bucket=B, Key="tampered") == "404"
assert error_code(s3.put_object, Bucket=B, Key="md5", Body=b"abc", ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg==") == "BadDigest"
assert error_code(s3.put_object, Bucket=B, Key="crc", Body=b"abc", ChecksumCRC32="AAAAAA==") == "BadDigest"
s3.put_object(Bucket=B, Key="sha", Body=b"abc", ChecksumAlgorithm="SHA256")
s3.delete_object(Bucket=B, Key="sha")
assert "Contents" not in s3.list_objects_v2(Bucket=B, Prefix="crc")
print("ok errors: SignatureDoesNotMatch, InvalidAccessKeyId, RequestTimeTooSkewed, expired presign, "
      "XAmzContentSHA256Mismatch, BadDigest (Content-MD5 and x-amz-checksum-crc32)")

# --- isolation between users
u2 = client(os.environ["USER2_KEY"], os.environ["USER2_SECRET"])
assert [b["Name"] for b in u2.list_buckets()["Buckets"]] == []
assert error_code(u2.get_object, Bucket=B, Key="hello.txt") == "AccessDenied"
assert error_code(u2.put_object, Bucket=B, Key="x", Body=b"x") == "AccessDenied"
u2.create_bucket(Bucket="user2-bucket")
assert [b["Name"] for b in u2.list_buckets()["Buckets"]] == ["user2-bucket"]
assert "user2-bucket" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
assert error_code(u2.create_bucket, Bucket=B) == "BucketAlreadyExists"
print("ok users see only their own buckets; admin sees all")

assert error_code(s3.delete_bucket, Bucket=B) == "BucketNotEmpty"
for k in ["hello.txt", "copy.txt", "big.bin", "chunked.bin", "chunked-mp.bin", "presigned-put"]:
    s3.delete_object(Bucket=B, Key=k)
s3.delete_bucket(Bucket=B)
assert error_code(s3.head_bucket, Bucket=B) == "404"
print("ok delete bucket")
