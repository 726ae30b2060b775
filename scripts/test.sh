#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy, license/ban policy, all tests as root, and the
# test binaries again as an unprivileged user (nobody), so enforcement is proven both ways.
# Installs what the tests use when run as root on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

install_packages() {
  # Tools the tests call inside the sandbox or around it.
  local need=()
  command -v setpriv >/dev/null || need+=(util-linux)
  command -v script >/dev/null || need+=(bsdutils)
  command -v ipcmk >/dev/null || need+=(util-linux)
  command -v curl >/dev/null || need+=(curl)
  command -v git >/dev/null || need+=(git)
  command -v ip >/dev/null || need+=(iproute2)
  command -v jq >/dev/null || need+=(jq)
  # The TUI test of warden codex: tmux answers the terminal queries Codex's TUI waits for.
  [ -x /usr/bin/tmux ] || need+=(tmux)
  # The Codex CLI and the npm packages of warden come from npm (with its Node).
  command -v npm >/dev/null || need+=(npm)
  [ -x /usr/bin/python3 ] || need+=(python3)
  # The container tests: a FROM scratch image with warden and a static busybox, run by podman.
  command -v podman >/dev/null || need+=(podman)
  [ -x /usr/sbin/runc ] || need+=(runc)
  ldd /usr/bin/busybox 2>&1 | grep 'not a dynamic executable' >/dev/null || need+=(busybox-static)
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      log "installing ${need[*]}"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
      echo "missing tools: ${need[*]} (run as root to install them)" >&2
      exit 1
    fi
  fi
}

install_packages

# The real Codex CLI for the end-to-end credential-proxy test. Root installs it when missing; as
# another user an existing install is used, else that test is skipped (it fails when CI is set).
codex_dir=/opt/codex-0.169.0
if [ -z "${WARDEN_CODEX_BIN:-}" ]; then
  if [ "$(id -u)" = 0 ] || [ -x "$codex_dir/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex" ]; then
    log "Codex CLI for the end-to-end test"
    WARDEN_CODEX_BIN=$(scripts/install-codex.sh "$codex_dir")
    export WARDEN_CODEX_BIN
    echo "$WARDEN_CODEX_BIN"
  fi
fi

# The official OpenAI SDKs for warden serve's SDK test (crates/warden-cli/tests/it/sdk.rs): Python
# openai from PyPI in a venv, Node openai from npm with the Node 22 it needs, pinned in
# crates/warden-cli/tests/sdk/. Root installs them when missing; as another user an existing
# install is used, else that test is skipped (it fails when CI is set).
sdk_dir=/opt/warden-sdk
if [ -z "${WARDEN_SDK_PYTHON:-}" ] || [ -z "${WARDEN_SDK_NODE_DIR:-}" ]; then
  if [ "$(id -u)" = 0 ] || { [ -x "$sdk_dir/py/bin/python" ] && [ -x "$sdk_dir/node/node_modules/.bin/node" ]; }; then
    log "OpenAI SDKs (Python, Node) for the serve SDK test"
    sdk_env=$(scripts/install-sdks.sh "$sdk_dir")
    eval "$sdk_env"
    echo "$sdk_env"
  fi
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

if ! command -v cargo-deny >/dev/null && [ -n "${CI:-}" ]; then
  log "installing cargo-deny (crates.io)"
  cargo install --locked --quiet cargo-deny
fi
if command -v cargo-deny >/dev/null; then
  log "cargo deny (licenses, bans, sources)"
  cargo deny check licenses bans sources 2>&1 | tail -n 3
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "cargo deny failed" >&2; exit 1; }
else
  log "cargo-deny not installed: skipping (cargo install cargo-deny --locked to enable)"
fi

# Host-visible scratch space for the tests: outside /tmp and /var/tmp, which are private inside
# the sandbox (the checkout itself may live under /tmp). Root makes one nobody can use too.
if [ "$(id -u)" = 0 ]; then
  hostdir=$(mktemp -d /var/lib/warden-test.XXXXXX)
  chmod 1777 "$hostdir"
else
  mkdir -p "$HOME/.cache" && hostdir=$(mktemp -d "$HOME/.cache/warden-test.XXXXXX")
fi
export WARDEN_TEST_HOST_DIR="$hostdir"
trap 'rm -rf "$hostdir"' EXIT

log "tests as $(id -un) (uid $(id -u))"
cargo test --workspace --locked 2>&1 | tee target/test-root.log | grep -E '^(test result|running|failures:|---- )|FAILED|panicked' || true
if grep -qE 'FAILED|error: test failed|error\[|could not compile' target/test-root.log; then
  echo "tests failed as $(id -un); full log in target/test-root.log" >&2
  grep -A40 -E '^failures:' target/test-root.log | head -n 200 >&2 || true
  exit 1
fi

if [ "$(id -u)" != 0 ]; then
  log "not root: the unprivileged pass runs only when the suite is started as root"
  exit 0
fi

# The deployment (deploy/, docs/deploy.md), root pass only, beside the container tests: the
# Kubernetes manifests validated offline, and the FROM scratch image built from the warden the
# tests just built and run with podman (about 20 s; up to 50 s more when its venv is first made).
WARDEN_BIN=target/x86_64-unknown-linux-gnu/debug/warden scripts/check-deploy.sh

# Distribution (docs/install.md), root pass only: one reproducible-mode release build
# (scripts/release.sh --once: the static binary, the npm and .deb packages, the SBOM, SHA256SUMS),
# then the packages installed into a fresh npm prefix and a throwaway dpkg root and run.
log "release: scripts/release.sh --once and scripts/check-packages.sh"
dist=$(mktemp -d /var/tmp/warden-dist.XXXXXX)
scripts/release.sh --once "$dist"
scripts/check-packages.sh "$dist"
rm -rf "$dist"

# A bounded fuzz run of the egress proxy's parsers of untrusted input (crates/warden-egress/fuzz).
# cargo-fuzz needs unstable compiler flags (sanitizer coverage); the machine has only the stable
# toolchain, so RUSTC_BOOTSTRAP=1 unlocks them for this build alone (the product is never built
# that way). In CI, or wherever cargo-fuzz is installed; WARDEN_FUZZ_SECS per target (default 20).
if ! command -v cargo-fuzz >/dev/null && [ -n "${CI:-}" ]; then
  log "installing cargo-fuzz (crates.io)"
  cargo install --locked --quiet cargo-fuzz
fi
if command -v cargo-fuzz >/dev/null; then
  secs=${WARDEN_FUZZ_SECS:-20}
  for target in request_head socks_request client_hello tunnel_flight; do
    log "fuzz $target for ${secs}s"
    fuzz_log="$PWD/target/fuzz-$target.log"
    if (cd crates/warden-egress/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$target" -- \
        -max_total_time="$secs" -rss_limit_mb=2048) > "$fuzz_log" 2>&1; then
      tail -n 1 "$fuzz_log"
    else
      tail -n 40 "$fuzz_log" >&2
      echo "fuzzing $target failed: full log in $fuzz_log, input in crates/warden-egress/fuzz/artifacts/$target" >&2
      exit 1
    fi
  done
else
  log "cargo-fuzz not installed: skipping the fuzz run (cargo install cargo-fuzz --locked to enable)"
fi

log "tests as nobody (setpriv --reuid=65534 --regid=65534 --clear-groups)"
stage=$(mktemp -d /tmp/warden-nobody.XXXXXX)
chmod 755 "$stage"
cargo test --workspace --locked --no-run --message-format=json 2>/dev/null > "$stage/artifacts.json"
jq -r 'select(.reason == "compiler-artifact" and .profile.test == true) | .executable // empty' \
  "$stage/artifacts.json" | sort -u > "$stage/list"
warden_bin=$(jq -r 'select(.reason == "compiler-artifact" and .target.name == "warden" and .profile.test == false) | .executable // empty' \
  "$stage/artifacts.json" | head -n 1)
[ -x "$warden_bin" ] || { echo "cannot find the warden binary in cargo's output" >&2; exit 1; }
cp "$warden_bin" "$stage/warden"
# The fake app-server worker warden-agent's tests drive (they find it through WARDEN_FAKE_WORKER).
fake_worker=$(jq -r 'select(.reason == "compiler-artifact" and .target.name == "fake-worker" and .profile.test == false) | .executable // empty' \
  "$stage/artifacts.json" | head -n 1)
[ -x "$fake_worker" ] || { echo "cannot find the fake-worker binary in cargo's output" >&2; exit 1; }
cp "$fake_worker" "$stage/fake-worker"
mkdir -m 1777 "$stage/tmp"
trap 'rm -rf "$stage" "$hostdir"' EXIT
failed=0
total_pass=0
while read -r bin; do
  [ -n "$bin" ] || continue
  name=$(basename "$bin")
  cp "$bin" "$stage/$name"
  chmod 755 "$stage/$name"
  echo "--- $name"
  # Run from a directory nobody can read; HOME and TMPDIR are nobody's own.
  if out=$(cd "$stage" && setpriv --reuid=65534 --regid=65534 --clear-groups \
      env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME="$stage/tmp" TMPDIR="$stage/tmp" \
      WARDEN_BIN="$stage/warden" WARDEN_FAKE_WORKER="$stage/fake-worker" WARDEN_TEST_TMP="$stage/tmp" WARDEN_TEST_HOST_DIR="$hostdir" CI="${CI:-}" \
      WARDEN_CODEX_BIN="${WARDEN_CODEX_BIN:-}" \
      WARDEN_SDK_PYTHON="${WARDEN_SDK_PYTHON:-}" WARDEN_SDK_NODE_DIR="${WARDEN_SDK_NODE_DIR:-}" \
      "./$name" 2>&1); then
    echo "$out" | grep -E '^test result' || true
  else
    echo "$out" | tail -n 150
    failed=1
  fi
done < "$stage/list"
if [ "$failed" != 0 ]; then
  echo "tests failed as nobody" >&2
  exit 1
fi
log "all checks passed as root and as nobody"
