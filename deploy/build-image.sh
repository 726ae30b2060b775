#!/usr/bin/env bash
# Builds the `warden serve` image (deploy/Containerfile, FROM scratch) with podman, from a build
# context laid out in a temporary directory: a static warden, Codex's static binary and the
# ripgrep it ships (npm: @openai/codex-linux-x64), /etc/passwd and /etc/group for uid 65534, a CA
# bundle, and the directories the image declares. No registry is contacted: nothing is pulled.
#
#   deploy/build-image.sh [--warden PATH] [--codex PATH] [--tag IMAGE]
#
# --warden  a static warden binary (default: $WARDEN_BIN, else `cargo build --release --locked
#           -p warden-cli` and target/x86_64-unknown-linux-gnu/release/warden)
# --codex   Codex's native binary (default: $WARDEN_CODEX_BIN, else what scripts/install-codex.sh
#           prints, which installs @openai/codex@0.169.0 when it is missing)
# --tag     the image name (default: localhost/warden:latest; the warden version is tagged too)
#
# Prints the image name on stdout, everything else on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

warden=${WARDEN_BIN:-}
codex=${WARDEN_CODEX_BIN:-}
tag=localhost/warden:latest
value() {
  case "${2-}" in ''|--*) echo "build-image.sh: $1 needs a value (see --help)" >&2; exit 2 ;; esac
}
while [ $# -gt 0 ]; do
  case "$1" in
    --warden) value "$@"; warden=$2; shift 2 ;;
    --codex) value "$@"; codex=$2; shift 2 ;;
    --tag) value "$@"; tag=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ -z "$warden" ]; then
  echo "build-image.sh: cargo build --release --locked -p warden-cli" >&2
  cargo build --release --locked -p warden-cli >&2
  warden=target/x86_64-unknown-linux-gnu/release/warden
fi
if [ -z "$codex" ]; then
  codex=$(scripts/install-codex.sh)
fi

# A FROM scratch image has no loader: both binaries must be static (no PT_INTERP).
require_static() {
  [ -x "$1" ] || { echo "build-image.sh: $1 is not an executable file" >&2; exit 1; }
  if readelf -lW "$1" | grep 'Requesting program interpreter' >/dev/null; then
    echo "build-image.sh: $1 is dynamically linked; an image FROM scratch needs a static binary" >&2
    echo "  (warden is static-pie through .cargo/config.toml: build it with cargo from this checkout)" >&2
    exit 1
  fi
}
require_static "$warden"
require_static "$codex"
rg="$(dirname "$codex")/../codex-path/rg"
require_static "$rg"

warden_version=$("$warden" --version | awk '{print $2}')
codex_version=$("$codex" --version | awk '{print $NF}')

ctx=$(mktemp -d "${TMPDIR:-/tmp}/warden-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
cp deploy/Containerfile "$ctx/Containerfile"
cp "$warden" "$ctx/warden"
cp "$codex" "$ctx/codex"
cp "$rg" "$ctx/rg"
chmod 0755 "$ctx/warden" "$ctx/codex" "$ctx/rg"

root="$ctx/rootfs"
mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/var/lib" "$root/workspace" "$ctx/state"
# Codex and git look the current user up; root exists only as the files' owner.
printf 'root:x:0:0:root:/:/sbin/nologin\nnobody:x:65534:65534:nobody:/var/lib/warden:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
# TLS for the workers' own connections (a ChatGPT login goes to its hosts directly); warden's
# proxies carry compiled-in roots and need no file.
ca=/etc/ssl/certs/ca-certificates.crt
[ -r "$ca" ] || { echo "build-image.sh: $ca is missing (apt-get install ca-certificates)" >&2; exit 1; }
cp "$ca" "$root/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/ssl/certs/ca-certificates.crt"
chmod 1777 "$root/tmp"

versioned="${tag%:*}:$warden_version"
echo "build-image.sh: building $tag ($versioned) with warden $warden_version and Codex $codex_version" >&2
podman --runtime runc build -q -f "$ctx/Containerfile" -t "$tag" -t "$versioned" \
  --label "org.opencontainers.image.title=warden" \
  --label "org.opencontainers.image.version=$warden_version" \
  --label "org.opencontainers.image.licenses=Apache-2.0" \
  --label "warden.codex.version=$codex_version" \
  "$ctx" >&2
echo "$tag"
