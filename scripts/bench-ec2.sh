#!/usr/bin/env bash
# `just bench ec2` (the EC2 half of the API benchmark): DescribeInstances over 1,000 instances
# and RunInstances+TerminateInstances cycles (bounded client threads), and DescribeRegions
# (wrk), against mallee-frontend and moto_server in the same run. Loopback only. Prints
#   bench: api <case> ours=<v> moto=<v> ratio=<ours/moto> unit=req/s
# Knobs: BENCH_EC2_SECONDS (default 8), BENCH_EC2_CONNS (default 4), BENCH_EC2_INSTANCES (1000).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${BENCH_EC2_SECONDS:-8}
CONNS=${BENCH_EC2_CONNS:-4}
COUNT=${BENCH_EC2_INSTANCES:-1000}

for tool in wrk curl python3 moto_server; do
    command -v "$tool" >/dev/null || { echo "bench-ec2: $tool missing: run \`just setup\`" >&2; exit 1; }
done

cargo build --release -q -p mallee-frontend
BIN=$PWD/target/release/mallee-frontend

work=$(mktemp -d /tmp/mallee-bench-ec2.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    local deadline=$((SECONDS + 30))
    until curl -s -o /dev/null "http://127.0.0.1:$1/"; do
        ((SECONDS < deadline)) || { echo "bench-ec2: nothing listening on $1" >&2; exit 1; }
        sleep 0.1
    done
}

ours_port=$(free_port)
cat >"$work/frontend.toml" <<TOML
listen = "127.0.0.1:$ours_port"
data_dir = "$work/data"
[ec2]
clusters = ["bench-zone"]
cluster_secret = "bench-secret"
node_deadline_secs = 86400
TOML
"$BIN" --config "$work/frontend.toml" serve >"$work/frontend.log" 2>&1 &
pids+=($!)
moto_port=$(free_port)
moto_server -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
pids+=($!)
wait_port "$ours_port"
wait_port "$moto_port"

python3 - "$work" "$ours_port" "$moto_port" "$SECS" "$CONNS" "$COUNT" <<'PY'
import http.client, json, re, subprocess, sys, threading, time, urllib.parse, urllib.request
import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

work, ours, moto, secs, conns, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
creds = dict(l.split(" = ") for l in open(f"{work}/data/admin-credentials").read().split("\n") if " = " in l)
KEYS = {ours: (creds["aws_access_key_id"], creds["aws_secret_access_key"]), moto: ("testing", "testing")}
CT = "application/x-www-form-urlencoded; charset=utf-8"

def signed(port, params):
    body = urllib.parse.urlencode({"Version": "2016-11-15", **params})
    req = AWSRequest(method="POST", url=f"http://127.0.0.1:{port}/", data=body, headers={"Content-Type": CT})
    SigV4Auth(Credentials(*KEYS[port]), "ec2", "us-east-1").add_auth(req)
    return body, dict(req.headers)

def call(conn, port, params):
    body, headers = signed(port, params)
    conn.request("POST", "/", body=body, headers=headers)
    resp = conn.getresponse()
    text = resp.read().decode()
    assert resp.status == 200, (params, resp.status, text[:500])
    return text

# A node with room for everything, so our scheduler places every instance.
def node(path, body, token=None):
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = f"Bearer {token}"
    r = urllib.request.Request(f"http://127.0.0.1:{ours}{path}", data=json.dumps(body).encode(), headers=h)
    return json.load(urllib.request.urlopen(r))
tok = node("/_node/enroll", {"node_id": "bench-node", "cluster": "bench-zone", "secret": "bench-secret"})["token"]
node("/_node/register", {"node_id": "bench-node", "cluster": "bench-zone", "cpus": 10**6, "memory_mib": 10**9,
                         "disk_gib": 10**6, "macs": [], "agent_version": "bench"}, tok)
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{ours}", region_name="us-east-1",
                  aws_access_key_id=KEYS[ours][0], aws_secret_access_key=KEYS[ours][1])
s3.create_bucket(Bucket="img")
s3.put_object(Bucket="img", Key="root.img", Body=b"x" * 4096)
c = http.client.HTTPConnection("127.0.0.1", ours)
image = {ours: re.search(r"<imageId>(.*?)</imageId>", call(c, ours, {"Action": "RegisterImage", "Name": "bench", "ImageLocation": "img/root.img"})).group(1)}
moto_ec2 = boto3.client("ec2", endpoint_url=f"http://127.0.0.1:{moto}", region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")
image[moto] = moto_ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

for port in (ours, moto):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    left = count
    while left:
        n = min(100, left)
        call(conn, port, {"Action": "RunInstances", "ImageId": image[port], "MinCount": n, "MaxCount": n, "InstanceType": "m1.small"})
        left -= n
    got = call(conn, port, {"Action": "DescribeInstances"}).count("<instanceId>")
    assert got == count, f"port {port}: {got} instances, expected {count}"

def wrk_rps(port, params):
    body, headers = signed(port, params)
    lua = f"{work}/req-{port}.lua"
    with open(lua, "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write(f"wrk.body = {json.dumps(body)}\n")
        for k, v in headers.items():
            f.write(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n")
    out = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{secs}s", "--timeout", "60s", "-s", lua,
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert not non2xx, out
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

def closed_loop(port, work_fn, min_requests=3):
    """Runs `work_fn(conn) -> requests done` from `conns` threads for `secs` (and until at
    least `min_requests` are done, so a slow peer still gets a figure); req/s."""
    done = [0] * conns
    stop = time.time() + secs
    def worker(k):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while time.time() < stop or sum(done) < min_requests:
            done[k] += work_fn(conn)
    start = time.time()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(conns)]
    for t in threads: t.start()
    for t in threads: t.join()
    return sum(done) / (time.time() - start)

def describe(port):
    body, headers = signed(port, {"Action": "DescribeInstances"})
    def one(conn):
        conn.request("POST", "/", body=body, headers=headers)
        resp = conn.getresponse()
        text = resp.read()
        assert resp.status == 200 and text.count(b"<instanceId>") == count, resp.status
        return 1
    return closed_loop(port, one)

def cycles(port):
    """RunInstances + TerminateInstances pairs."""
    def one(conn):
        xml = call(conn, port, {"Action": "RunInstances", "ImageId": image[port], "MinCount": 1, "MaxCount": 1, "InstanceType": "m1.small"})
        iid = re.search(r"<instanceId>(.*?)</instanceId>", xml).group(1)
        call(conn, port, {"Action": "TerminateInstances", "InstanceId.1": iid})
        return 2
    return closed_loop(port, one)

def line(case, o, m):
    print(f"bench: api {case} ours={o:.1f} moto={m:.1f} ratio={o / m if m else 0:.2f} unit=req/s", flush=True)

line(f"describe-instances-{count}", describe(ours), describe(moto))
line("describe-regions", wrk_rps(ours, {"Action": "DescribeRegions"}), wrk_rps(moto, {"Action": "DescribeRegions"}))
line("run-terminate", cycles(ours), cycles(moto))
PY
