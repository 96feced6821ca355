#!/usr/bin/env bash
# `just bench api`: Walrus (S3) GET and PUT of small (4 KiB) and large objects under bounded
# local load, against nginx (GET of the same file) and moto_server (GET and PUT) in the same
# run, all over plain HTTP; and ours over HTTPS against ours over HTTP (small GET). Everything
# listens on 127.0.0.1 only. Prints
#   bench: api <case> ours=<v> <peer>=<v> ratio=<ours/peer> unit=<req/s|MB/s>
#   bench: api https-get-4k ours-https=<v> ours-http=<v> req/s ratio=<https/http>
# Knobs: BENCH_API_LARGE_MIB (default 1024), BENCH_API_SECONDS (wrk duration, default 8),
#        BENCH_API_CONNS (wrk connections, default 8), BENCH_API_REPEAT (large transfers, default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
LARGE_MIB=${BENCH_API_LARGE_MIB:-1024}
SECS=${BENCH_API_SECONDS:-8}
CONNS=${BENCH_API_CONNS:-8}
REPEAT=${BENCH_API_REPEAT:-3}

for tool in wrk nginx curl python3 moto_server; do
    command -v "$tool" >/dev/null || { echo "bench-api: $tool missing: run \`just setup\`" >&2; exit 1; }
done

cargo build --release -q -p mallee-frontend
BIN=$PWD/target/release/mallee-frontend

work=$(mktemp -d /tmp/mallee-bench-api.XXXXXX)
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
        ((SECONDS < deadline)) || { echo "bench-api: nothing listening on $1" >&2; exit 1; }
        sleep 0.1
    done
}

mkdir -p "$work/www/bench" "$work/data" "$work/data-tls"
chmod -R 755 "$work/www"
head -c 4096 /dev/urandom >"$work/www/bench/small"
head -c $((LARGE_MIB << 20)) /dev/urandom >"$work/www/bench/large"

# Ours against the peers: plain HTTP, as nginx and moto_server are served here ([tls] is on by
# default).
ours_port=$(free_port)
printf 'listen = "127.0.0.1:%s"\ndata_dir = "%s/data"\n[tls]\nenabled = false\n' "$ours_port" "$work" \
    >"$work/frontend.toml"
"$BIN" --config "$work/frontend.toml" serve >"$work/frontend.log" 2>&1 &
pids+=($!)

# A second instance of ours over HTTPS (its own CA; clients verify it with the bundle it
# writes), idle until the https-get-4k line.
tls_port=$(free_port)
printf 'listen = "127.0.0.1:%s"\ndata_dir = "%s/data-tls"\n[tls]\nenabled = true\n' "$tls_port" "$work" \
    >"$work/frontend-tls.toml"
"$BIN" --config "$work/frontend-tls.toml" serve >"$work/frontend-tls.log" 2>&1 &
pids+=($!)

nginx_port=$(free_port)
cat >"$work/nginx.conf" <<NGINX
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path $work/nginx-body;
    proxy_temp_path $work/nginx-proxy;
    fastcgi_temp_path $work/nginx-fastcgi;
    uwsgi_temp_path $work/nginx-uwsgi;
    scgi_temp_path $work/nginx-scgi;
    server { listen 127.0.0.1:$nginx_port; root $work/www; }
}
NGINX
nginx -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)

moto_port=$(free_port)
moto_server -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
pids+=($!)

wait_port "$ours_port"
wait_port "$nginx_port"
wait_port "$moto_port"
# The HTTPS instance says where its CA bundle is before it listens.
deadline=$((SECONDS + 30))
until grep -q "listening on https://127.0.0.1:$tls_port" "$work/frontend-tls.log"; do
    ((SECONDS < deadline)) || { echo "bench-api: ours over https not listening:" >&2; cat "$work/frontend-tls.log" >&2; exit 1; }
    sleep 0.1
done
tls_ca=$(sed -n 's/.*clients verify it with the CA bundle //p' "$work/frontend-tls.log" | head -n1)
[ -s "$tls_ca" ] || { echo "bench-api: no CA bundle named in $work/frontend-tls.log" >&2; exit 1; }

# Upload the objects to the S3 servers and print presigned GET and PUT URLs (SigV4, unsigned
# payload), so the load generators need no signing of their own. Ours over https gets the
# small object only, uploaded with the CA bundle verified.
python3 - "$work" "$ours_port" "$moto_port" "$tls_port" "$tls_ca" >"$work/urls" <<'PY'
import sys, boto3
from botocore.config import Config
work, ours, moto, tls, ca = sys.argv[1:6]
cfg = Config(signature_version="s3v4")
def ours_client(endpoint, data, verify=None):
    keys = [l.split(" = ")[1].strip() for l in open(f"{data}/admin-credentials") if " = " in l]
    return boto3.session.Session(profile_name=None).client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", config=cfg, verify=verify,
        **dict(zip(("aws_access_key_id", "aws_secret_access_key"), keys)))
ours_c = ours_client(f"http://127.0.0.1:{ours}", f"{work}/data")
tls_c = ours_client(f"https://127.0.0.1:{tls}", f"{work}/data-tls", verify=ca)
moto_c = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{moto}", region_name="us-east-1", config=cfg,
                      aws_access_key_id="testing", aws_secret_access_key="testing")
for name, c, objs in (("ours", ours_c, ("small", "large")), ("moto", moto_c, ("small", "large")),
                      ("ours-https", tls_c, ("small",))):
    c.create_bucket(Bucket="bench")
    for obj in objs:
        c.upload_file(f"{work}/www/bench/{obj}", "bench", obj)
        get = c.generate_presigned_url("get_object", Params={"Bucket": "bench", "Key": obj}, ExpiresIn=3600)
        put = c.generate_presigned_url("put_object", Params={"Bucket": "bench", "Key": obj + "-put"}, ExpiresIn=3600)
        print(f"{name} get {obj} {get}")
        print(f"{name} put {obj} {put}")
PY
url() { awk -v a="$1" -v b="$2" -v c="$3" '$1==a && $2==b && $3==c {print $4}' "$work/urls"; }

# Successful replies per second for a bounded wrk run ($2: an optional Lua script): wrk's
# "Requests/sec:" less the share of non-2xx/3xx replies. A run with no successful reply is an
# error, never a figure.
wrk_rps() {
    local script=() out
    [ -n "${2:-}" ] && script=(-s "$2")
    out=$(wrk -t2 -c"$CONNS" -d"${SECS}s" "${script[@]}" "$1")
    awk -v url="$1" '
        / requests in / { total = $1 }
        /Non-2xx or 3xx responses:/ { bad = $NF }
        /Requests\/sec/ { rps = $2 }
        END {
            if (total <= bad || rps <= 0) {
                printf "bench-api: no successful reply from %s (%d of %d failed)\n", url, bad, total > "/dev/stderr"
                exit 1
            }
            printf "%.2f\n", rps * (total - bad) / total
        }' <<<"$out"
}

cat >"$work/put.lua" <<LUA
wrk.method = "PUT"
local f = io.open("$work/www/bench/small", "rb")
wrk.body = f:read("*all")
f:close()
LUA

# Median MB/s of REPEAT sequential large transfers with curl; $1 = get|put, $2 = URL.
curl_mbs() {
    local speeds=()
    for _ in $(seq "$REPEAT"); do
        if [ "$1" = get ]; then
            speeds+=("$(curl -sS -f -o /dev/null -w '%{speed_download}' "$2")")
        else
            speeds+=("$(curl -sS -f -o /dev/null -w '%{speed_upload}' -T "$work/www/bench/large" "$2")")
        fi
    done
    printf '%s\n' "${speeds[@]}" | sort -g | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)] / 1048576}'
}

line() { # case ours peer-name peer unit
    awk -v c="$1" -v o="$2" -v pn="$3" -v p="$4" -v u="$5" \
        'BEGIN {printf "bench: api %s ours=%s %s=%s ratio=%.2f unit=%s\n", c, o, pn, p, (p > 0 ? o / p : 0), u}'
}

ours_get_small=$(wrk_rps "$(url ours get small)")
nginx_get_small=$(wrk_rps "http://127.0.0.1:$nginx_port/bench/small")
moto_get_small=$(wrk_rps "$(url moto get small)")
line get-4k "$ours_get_small" nginx "$nginx_get_small" req/s
line get-4k "$ours_get_small" moto "$moto_get_small" req/s

# The same GET over HTTPS. wrk does not check certificates (it sets SSL_VERIFY_NONE), so curl
# first fetches the URL it loads verified against the CA bundle (and the upload above went
# through boto3 verifying it too); wrk's $CONNS keep-alive connections make $CONNS handshakes
# a run, so checking those too would not move the figure.
https_small=$(url ours-https get small)
curl -sS -f --cacert "$tls_ca" -o /dev/null "$https_small" ||
    { echo "bench-api: ours over https does not verify with $tls_ca" >&2; exit 1; }
ours_https_get_small=$(wrk_rps "$https_small")
awk -v s="$ours_https_get_small" -v p="$ours_get_small" \
    'BEGIN {printf "bench: api https-get-4k ours-https=%s ours-http=%s req/s ratio=%.2f\n", s, p, (p > 0 ? s / p : 0)}'

ours_put_small=$(wrk_rps "$(url ours put small)" "$work/put.lua")
moto_put_small=$(wrk_rps "$(url moto put small)" "$work/put.lua")
line put-4k "$ours_put_small" moto "$moto_put_small" req/s

big="${LARGE_MIB}m"
ours_get_large=$(curl_mbs get "$(url ours get large)")
nginx_get_large=$(curl_mbs get "http://127.0.0.1:$nginx_port/bench/large")
moto_get_large=$(curl_mbs get "$(url moto get large)")
line "get-$big" "$ours_get_large" nginx "$nginx_get_large" MB/s
line "get-$big" "$ours_get_large" moto "$moto_get_large" MB/s

ours_put_large=$(curl_mbs put "$(url ours put large)")
moto_put_large=$(curl_mbs put "$(url moto put large)")
line "put-$big" "$ours_put_large" moto "$moto_put_large" MB/s

# The EC2 half (DescribeInstances x1000, Run/Terminate vs moto_server).
"$(dirname "$0")/bench-api-ec2"
