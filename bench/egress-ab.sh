#!/usr/bin/env bash
# A/B of two warden builds' egress proxies on loopback, runs alternating, one nginx (HTTP and
# HTTPS, 1 GiB file): CONNECT tunnel throughput for HTTPS and plain HTTP, and the median time of
# CONNECT + TLS handshake + a tiny GET. NEW must know --allow-raw (raw.test is raw in NEW).
#
#   bench/egress-ab.sh OLD_WARDEN [NEW_WARDEN]   (as root; needs nginx, see bench/egress.sh)
#   e.g. git archive <rev> | tar -x -C /tmp/old && (cd /tmp/old && cargo build --release -p warden-cli)
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?usage: bench/egress-ab.sh OLD_WARDEN [NEW_WARDEN]}
new=${2:-$PWD/target/x86_64-unknown-linux-gnu/release/warden}
command -v nginx >/dev/null || { echo "nginx missing: run bench/egress.sh once (it installs nginx-light)" >&2; exit 1; }
echo "machine: $(nproc) cores, $(uname -r); $(date -u +%Y-%m-%dT%H:%MZ); load $(cut -d' ' -f1-3 /proc/loadavg)"
work=$(mktemp -d /var/tmp/warden-ab.XXXXXX); chmod 755 "$work"
pids=(); cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }; trap cleanup EXIT
up=18080 tls=18443 po=18128 pn=18129
mkdir -p "$work/www" "$work/nginx"; truncate -s 1G "$work/www/big"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=bench.test \
  -addext subjectAltName=DNS:bench.test -keyout "$work/nginx/key.pem" -out "$work/nginx/cert.pem" 2>/dev/null
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/nginx/pid; error_log $work/nginx/error.log;
events { worker_connections 4096; }
http { access_log off; sendfile on;
  server { listen 127.0.0.1:$up; root $work/www; }
  server { listen 127.0.0.1:$tls ssl; root $work/www; ssl_certificate $work/nginx/cert.pem; ssl_certificate_key $work/nginx/key.pem; } }
CONF
nginx -c "$work/nginx/nginx.conf" & pids+=($!)
common=(--allow-domain "bench.test:$up" --allow-domain "bench.test:$tls" --resolve bench.test:127.0.0.1 --allow-private 127.0.0.1/32)
"$old" egress --no-audit --listen 127.0.0.1:$po "${common[@]}" 2>/dev/null & pids+=($!)
"$new" egress --no-audit --listen 127.0.0.1:$pn "${common[@]}" --allow-raw "raw.test:$up" --resolve raw.test:127.0.0.1 2>/dev/null & pids+=($!)
for port in $up $tls $po $pn; do for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done; done
ca=(--cacert "$work/nginx/cert.pem" --resolve "bench.test:$tls:127.0.0.1")
one() { curl -s -o /dev/null -w '%{speed_download}\n' "$@"; }
declare -A r
for i in 1 2 3 4 5; do
  r[https_old]+="$(one "${ca[@]}" -p -x http://127.0.0.1:$po https://bench.test:$tls/big) "
  r[https_new]+="$(one "${ca[@]}" -p -x http://127.0.0.1:$pn https://bench.test:$tls/big) "
  r[https_direct]+="$(one "${ca[@]}" https://bench.test:$tls/big) "
  r[http_old]+="$(one -p -x http://127.0.0.1:$po http://bench.test:$up/big) "
  r[http_new_raw]+="$(one -p -x http://127.0.0.1:$pn http://raw.test:$up/big) "
  r[http_new_checked]+="$(one -p -x http://127.0.0.1:$pn http://bench.test:$up/big) "
  r[http_direct]+="$(one http://127.0.0.1:$up/big) "
done
# TLS tunnel set-up: 200 CONNECT + handshake + tiny GET, median time_total.
printf 'small\n' > "$work/www/small"
for v in old new; do
  port=$([ $v = old ] && echo $po || echo $pn)
  t=$(for _ in $(seq 200); do curl -s -o /dev/null -w '%{time_total}\n' "${ca[@]}" -p -x http://127.0.0.1:$port https://bench.test:$tls/small; done | sort -n | sed -n 100p)
  echo "tls-setup-median-$v ${t}s"
done
for k in https_direct https_old https_new http_direct http_old http_new_raw http_new_checked; do
  echo "$k $(echo ${r[$k]} | tr ' ' '\n' | sort -n | sed -n 3p | awk '{printf "%.0f MB/s (median of 5)", $1/1e6}')   runs: $(echo ${r[$k]} | tr ' ' '\n' | awk '{printf "%.0f ", $1/1e6}')"
done
