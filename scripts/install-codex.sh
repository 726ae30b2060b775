#!/usr/bin/env bash
# Installs the Codex CLI the end-to-end tests and benchmarks drive (npm: @openai/codex@0.169.0) into
# DIR (default /opt/codex-0.169.0) unless it is already there, and prints the path of its native
# binary. The install is world-readable, so the unprivileged test pass can run it too.
set -euo pipefail
version=0.169.0
dir=${1:-/opt/codex-$version}
bin="$dir/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex"
if [ ! -x "$bin" ] || ! "$bin" --version 2>/dev/null | grep -F "$version" >/dev/null; then
  command -v npm >/dev/null || { echo "install-codex.sh: npm is missing (apt-get install -y npm)" >&2; exit 1; }
  mkdir -p "$dir"
  echo "install-codex.sh: npm install @openai/codex@$version into $dir" >&2
  npm install --prefix "$dir" --silent --no-audit --no-fund "@openai/codex@$version" >&2
  chmod -R a+rX "$dir"
fi
"$bin" --version >/dev/null
echo "$bin"
