"""AWS CLI (v1) against a running mallee-frontend: mb, cp 100 MiB up and down (multipart),
ls, ranged get-object, presigned GET with curl, rm, rb. Usage: s3_cli.py ENDPOINT"""
import json
import os
import subprocess
import sys
import tempfile

ENDPOINT = sys.argv[1]
BUCKET = "cli-bucket"


def aws(*args, check=True):
    r = subprocess.run(["aws", "--endpoint-url", ENDPOINT, *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"aws {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def same_file(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


with tempfile.TemporaryDirectory() as tmp:
    big = os.path.join(tmp, "big.bin")
    with open(big, "wb") as f:
        for _ in range(100):
            f.write(os.urandom(1 << 20))

    aws("s3", "mb", f"s3://{BUCKET}")
    assert BUCKET in aws("s3", "ls").stdout
    print("ok mb + ls buckets")

    aws("s3", "cp", "--no-progress", big, f"s3://{BUCKET}/dir/big.bin")
    listing = aws("s3", "ls", f"s3://{BUCKET}/dir/").stdout
    assert "104857600 big.bin" in listing, listing
    head = json.loads(aws("s3api", "head-object", "--bucket", BUCKET, "--key", "dir/big.bin").stdout)
    assert head["ContentLength"] == 104857600, head
    assert head["ETag"].strip('"').endswith("-13"), head  # 8 MiB parts: multipart upload
    print("ok cp 100 MiB up (multipart)", head["ETag"])

    down = os.path.join(tmp, "down.bin")
    aws("s3", "cp", "--no-progress", f"s3://{BUCKET}/dir/big.bin", down)
    assert same_file(big, down), "downloaded bytes differ"
    print("ok cp 100 MiB down, bytes equal")

    part = os.path.join(tmp, "range.bin")
    aws("s3api", "get-object", "--bucket", BUCKET, "--key", "dir/big.bin", "--range", "bytes=5000000-5000999", part)
    with open(big, "rb") as f:
        f.seek(5000000)
        want = f.read(1000)
    with open(part, "rb") as f:
        assert f.read() == want, "ranged get differs"
    print("ok ranged get-object")

    small = os.path.join(tmp, "small.txt")
    with open(small, "w") as f:
        f.write("hello from mallee\n")
    aws("s3", "cp", "--no-progress", small, f"s3://{BUCKET}/small.txt")
    url = aws("s3", "presign", f"s3://{BUCKET}/small.txt", "--expires-in", "300").stdout.strip()
    got = subprocess.run(["curl", "-sS", "-f", url], capture_output=True)
    assert got.returncode == 0 and got.stdout == b"hello from mallee\n", got
    bad = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", url.replace("small.txt", "other.txt")],
                         capture_output=True, text=True)
    assert bad.stdout == "403", bad.stdout
    print("ok presigned GET with curl (and a changed path is refused)")

    # S3-to-S3 copy of a large object: the CLI uses UploadPartCopy with 8 MiB ranges, so equal
    # multipart ETags mean every part's MD5 matches.
    aws("s3", "cp", "--no-progress", f"s3://{BUCKET}/dir/big.bin", f"s3://{BUCKET}/dir/copy.bin")
    copy = json.loads(aws("s3api", "head-object", "--bucket", BUCKET, "--key", "dir/copy.bin").stdout)
    assert copy["ContentLength"] == 104857600 and copy["ETag"] == head["ETag"], (copy, head)
    print("ok s3-to-s3 copy of 100 MiB (UploadPartCopy)")

    aws("s3", "rm", f"s3://{BUCKET}/dir/copy.bin")
    aws("s3", "rm", f"s3://{BUCKET}/dir/big.bin")
    aws("s3", "rm", f"s3://{BUCKET}/small.txt")
    assert aws("s3", "ls", f"s3://{BUCKET}/", check=False).stdout.strip() == ""
    aws("s3", "rb", f"s3://{BUCKET}")
    assert BUCKET not in aws("s3", "ls").stdout
    print("ok rm + rb")
