#!/usr/bin/env bash
# Egress proxy benchmark, one run, everything on loopback:
#   1. a 1 GiB download through CONNECT tunnels (warden egress) vs direct: HTTPS (the ClientHello
#      checked, then spliced), plain HTTP under a raw rule (spliced from the first byte), and plain
#      HTTP without one (served by the proxy, every request checked);
#   2. small requests per second through warden egress vs tinyproxy (same client: ab, same concurrency);
#   3. added latency per request (p50/p99) of warden egress over direct (keep-alive client).
#
#   bench/egress.sh            (as root; installs nginx-light, tinyproxy, apache2-utils if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v tinyproxy >/dev/null || need+=(tinyproxy)
command -v ab >/dev/null || need+=(apache2-utils)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --locked -q -p warden-cli
warden=$PWD/target/x86_64-unknown-linux-gnu/release/warden
work=$(mktemp -d /var/tmp/warden-egress-bench.XXXXXX)
chmod 755 "$work"  # nginx workers (www-data) read the files
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# Upstream: nginx on 127.0.0.1:18080 (and HTTPS on :18443) serving a 1 GiB sparse file and a
# 13-byte file.
up=18080 tls=18443 wport=18128 tport=18888
mkdir -p "$work/www" "$work/nginx"
truncate -s 1G "$work/www/big"
printf 'hello, proxy\n' > "$work/www/small"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=bench.test \
  -addext subjectAltName=DNS:bench.test -keyout "$work/nginx/key.pem" -out "$work/nginx/cert.pem" 2>/dev/null
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/nginx/pid; error_log $work/nginx/error.log;
events { worker_connections 4096; }
http { access_log off; sendfile on; keepalive_requests 100000;
  server { listen 127.0.0.1:$up; root $work/www; }
  server { listen 127.0.0.1:$tls ssl; root $work/www;
    ssl_certificate $work/nginx/cert.pem; ssl_certificate_key $work/nginx/key.pem; } }
CONF
nginx -c "$work/nginx/nginx.conf" & pids+=($!)
cat > "$work/tinyproxy.conf" <<CONF
Port $tport
Listen 127.0.0.1
Timeout 60
MaxClients 512
Allow 127.0.0.1
ConnectPort $up
LogLevel Critical
CONF
tinyproxy -d -c "$work/tinyproxy.conf" >/dev/null 2>&1 & pids+=($!)
"$warden" egress --no-audit --listen 127.0.0.1:$wport --allow-domain "bench.test:$up" --allow-domain "bench.test:$tls" \
  --allow-raw "raw.test:$up" --resolve bench.test:127.0.0.1 --resolve raw.test:127.0.0.1 \
  --allow-cidr 127.0.0.1/32 --allow-private 127.0.0.1/32 --allow-port $up 2>/dev/null & pids+=($!)
for port in $up $tls $wport $tport; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
done

echo "machine: $(nproc) cores, $(uname -r); $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "1 GiB download (curl, median of 3, MB/s):"
speed() { for _ in 1 2 3; do curl -s -o /dev/null -w '%{speed_download}\n' "$@"; done | sort -n | sed -n 2p; }
ca=(--cacert "$work/nginx/cert.pem" --resolve "bench.test:$tls:127.0.0.1")
direct_tls=$(speed "${ca[@]}" "https://bench.test:$tls/big")
tunnel_tls=$(speed "${ca[@]}" -p -x "http://127.0.0.1:$wport" "https://bench.test:$tls/big")
direct=$(speed "http://127.0.0.1:$up/big")
tunnel_raw=$(speed -p -x "http://127.0.0.1:$wport" "http://raw.test:$up/big")
tunnel_http=$(speed -p -x "http://127.0.0.1:$wport" "http://bench.test:$up/big")
awk -v dt="$direct_tls" -v tt="$tunnel_tls" -v d="$direct" -v r="$tunnel_raw" -v h="$tunnel_http" 'BEGIN {
  printf "  HTTPS direct                   %8.0f MB/s\n", dt/1e6
  printf "  HTTPS through warden CONNECT   %8.0f MB/s   %.2fx direct (ClientHello checked, then spliced)\n", tt/1e6, tt/dt
  printf "  HTTP direct                    %8.0f MB/s\n", d/1e6
  printf "  HTTP, CONNECT, raw rule        %8.0f MB/s   %.2fx direct (spliced from the first byte)\n", r/1e6, r/d
  printf "  HTTP, CONNECT, no raw rule     %8.0f MB/s   %.2fx direct (served by the proxy, requests checked)\n", h/1e6, h/d }'

echo
echo "small requests per second (ab -n 20000 -c 32 -k, absolute-form through the proxy):"
rps() { ab -q -n 20000 -c 32 -k "$@" 2>/dev/null | awk '/Requests per second/ { print $4 }'; }
r_direct=$(rps "http://127.0.0.1:$up/small")
r_tiny=$(rps -X "127.0.0.1:$tport" "http://127.0.0.1:$up/small")
r_warden=$(rps -X "127.0.0.1:$wport" "http://127.0.0.1:$up/small")
awk -v d="$r_direct" -v t="$r_tiny" -v w="$r_warden" 'BEGIN {
  printf "  direct      %9.0f req/s\n  tinyproxy   %9.0f req/s\n  warden      %9.0f req/s   %.2fx tinyproxy\n", d, t, w, w/t }'

echo
echo "added latency per request (2000 sequential keep-alive GETs, python http.client):"
/usr/bin/python3 - "$up" "$wport" <<'PY'
import http.client, sys, time
up, wport = int(sys.argv[1]), int(sys.argv[2])
def run(host, port, target, n=2000):
    c = http.client.HTTPConnection(host, port)
    out = []
    for _ in range(n + 100):
        t = time.perf_counter_ns(); c.request("GET", target); c.getresponse().read(); out.append(time.perf_counter_ns() - t)
    return sorted(out[100:])
d = run("127.0.0.1", up, "/small")
w = run("127.0.0.1", wport, f"http://bench.test:{up}/small")
q = lambda v, p: v[int(len(v) * p) - 1] / 1000
for name, p in (("p50", 0.50), ("p99", 0.99)):
    print(f"  {name}: direct {q(d, p):7.0f} us, via warden {q(w, p):7.0f} us, added {q(w, p) - q(d, p):6.0f} us")
PY
