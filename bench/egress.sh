#!/usr/bin/env bash
# Egress proxy benchmark, one run, everything on loopback:
#   1. a 1 GiB download through CONNECT tunnels (warden egress) vs direct: HTTPS (the ClientHello
#      checked, then spliced), plain HTTP under a raw rule (spliced from the first byte), and plain
#      HTTP without one (served by the proxy, every request checked); and through warden's SOCKS5
#      listener (curl --socks5-hostname): HTTPS (checked, then spliced) and plain HTTP under the raw
#      rule. Direct and proxied downloads alternate, 5 rounds, medians (the machine is shared);
#   2. small requests per second through warden egress vs tinyproxy (same client: ab, same concurrency);
#   3. added latency per request (p50/p99) of warden egress over direct (keep-alive client).
# The last lines are `summary<TAB>measure<TAB>value<TAB>goal`, one per headline figure.
#
#   bench/egress.sh            (as root; installs nginx-light, tinyproxy, apache2-utils if missing)
#   WARDEN=/path/to/warden bench/egress.sh   (measure that build instead of building this tree)
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v tinyproxy >/dev/null || need+=(tinyproxy)
command -v ab >/dev/null || need+=(apache2-utils)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ -n "${WARDEN:-}" ]; then
  warden=$WARDEN  # another build, e.g. the one before a change
else
  cargo build --release --locked -q -p warden-cli
  warden=$PWD/target/x86_64-unknown-linux-gnu/release/warden
fi
work=$(mktemp -d /var/tmp/warden-egress-bench.XXXXXX)
chmod 755 "$work"  # nginx workers (www-data) read the files
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# Upstream: nginx on 127.0.0.1:18080 (and HTTPS on :18443) serving a 1 GiB sparse file and a
# 13-byte file.
up=18080 tls=18443 wport=18128 sport=18129 tport=18888
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
"$warden" egress --no-audit --listen 127.0.0.1:$wport --socks-listen 127.0.0.1:$sport --allow-domain "bench.test:$up" --allow-domain "bench.test:$tls" \
  --allow-raw "raw.test:$up" --resolve bench.test:127.0.0.1 --resolve raw.test:127.0.0.1 \
  --allow-cidr 127.0.0.1/32 --allow-private 127.0.0.1/32 --allow-port $up 2>/dev/null & pids+=($!)
for port in $up $tls $wport $sport $tport; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
done

echo "machine: $(nproc) cores, $(uname -r); $(date -u +%Y-%m-%dT%H:%MZ); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "1 GiB download (curl, direct and proxied alternating, median of 5, MB/s):"
ca=(--cacert "$work/nginx/cert.pem" --resolve "bench.test:$tls:127.0.0.1")
declare -A got
# Warm-up: nginx's first read of the sparse file fills the page cache (the first download is slow).
curl -s -o /dev/null "http://127.0.0.1:$up/big"
one() { got[$1]+="$(curl -s -o /dev/null -w '%{speed_download}' "${@:2}") "; }
for _ in 1 2 3 4 5; do
  one direct_tls "${ca[@]}" "https://bench.test:$tls/big"
  one tunnel_tls "${ca[@]}" -p -x "http://127.0.0.1:$wport" "https://bench.test:$tls/big"
  one socks_tls "${ca[@]}" --socks5-hostname "127.0.0.1:$sport" "https://bench.test:$tls/big"
  one direct "http://127.0.0.1:$up/big"
  one tunnel_raw -p -x "http://127.0.0.1:$wport" "http://raw.test:$up/big"
  one socks_raw --socks5-hostname "127.0.0.1:$sport" "http://raw.test:$up/big"
  one tunnel_http -p -x "http://127.0.0.1:$wport" "http://bench.test:$up/big"
done
median() { tr ' ' '\n' <<<"${got[$1]}" | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
dt=$(median direct_tls) tt=$(median tunnel_tls) st=$(median socks_tls) d=$(median direct)
r=$(median tunnel_raw) sr=$(median socks_raw) h=$(median tunnel_http)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
awk -v dt="$dt" -v tt="$tt" -v st="$st" -v d="$d" -v r="$r" -v sr="$sr" -v h="$h" 'BEGIN {
  printf "  HTTPS direct                   %8.0f MB/s\n", dt/1e6
  printf "  HTTPS through warden CONNECT   %8.0f MB/s   %.2fx direct (ClientHello checked, then spliced)\n", tt/1e6, tt/dt
  printf "  HTTPS through warden SOCKS5    %8.0f MB/s   %.2fx direct (ClientHello checked, then spliced)\n", st/1e6, st/dt
  printf "  HTTP direct                    %8.0f MB/s\n", d/1e6
  printf "  HTTP, CONNECT, raw rule        %8.0f MB/s   %.2fx direct (spliced from the first byte)\n", r/1e6, r/d
  printf "  HTTP, SOCKS5, raw rule         %8.0f MB/s   %.2fx direct (spliced from the first byte)\n", sr/1e6, sr/d
  printf "  HTTP, CONNECT, no raw rule     %8.0f MB/s   %.2fx direct (served by the proxy, requests checked)\n", h/1e6, h/d }'
for k in direct_tls tunnel_tls socks_tls direct tunnel_raw socks_raw tunnel_http; do
  printf '    %-12s %s\n' "$k" "$(tr ' ' '\n' <<<"${got[$k]}" | grep . | awk '{ printf "%.0f ", $1 / 1e6 }')"
done

echo
echo "small requests per second (ab -n 20000 -c 32 -k, absolute-form through the proxy):"
rps() { ab -q -n 20000 -c 32 -k "$@" 2>/dev/null | awk '/Requests per second/ { print $4 }'; }
r_direct=$(rps "http://127.0.0.1:$up/small")
r_tiny=$(rps -X "127.0.0.1:$tport" "http://127.0.0.1:$up/small")
r_warden=$(rps -X "127.0.0.1:$wport" "http://127.0.0.1:$up/small")
awk -v d="$r_direct" -v t="$r_tiny" -v w="$r_warden" 'BEGIN {
  printf "  direct      %9.0f req/s\n  tinyproxy   %9.0f req/s\n  warden      %9.0f req/s   %.2fx tinyproxy\n", d, t, w, w/t }'
rps_ratio=$(ratio "$r_warden" "$r_tiny")

echo
echo "added latency per request (2000 sequential keep-alive GETs, python http.client):"
lat=$(/usr/bin/python3 - "$up" "$wport" <<'PY'
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
print(f"p99-added {q(w, 0.99) - q(d, 0.99):.0f}")
PY
)
grep -v '^p99-added' <<<"$lat"
p99=$(awk '/^p99-added/ { print $2 }' <<<"$lat")

echo
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
printf 'summary\t%s\t%s\t%s\n' \
  "egress CONNECT HTTPS 1 GiB vs direct" "$(ratio "$tt" "$dt")" ">= 0.9x" \
  "egress CONNECT raw HTTP 1 GiB vs direct" "$(ratio "$r" "$d")" ">= 0.9x" \
  "egress SOCKS5 HTTPS 1 GiB vs direct" "$(ratio "$st" "$dt")" ">= 0.9x" \
  "egress SOCKS5 raw HTTP 1 GiB vs direct" "$(ratio "$sr" "$d")" ">= 0.9x" \
  "egress small requests vs tinyproxy" "$rps_ratio" ">= 1.5x" \
  "egress added latency p99" "$p99 us" "< 1000 us"
