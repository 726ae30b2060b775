#!/usr/bin/env bash
# Installs the official OpenAI SDKs that warden serve's SDK tests drive
# (crates/warden-cli/tests/it/sdk.rs), pinned by crates/warden-cli/tests/sdk/:
#   DIR/py    a venv of /usr/bin/python3 with requirements.txt (openai 3.57.0 and its dependencies);
#   DIR/node  npm ci of package.json + package-lock.json (openai 7.59.0 and Node 22.23.5, which that
#             SDK needs: it asks for Node >= 22, Debian's is older).
# DIR defaults to /opt/warden-sdk. Nothing is done when the installed pins already match. The
# install is world-readable, so the unprivileged test pass can run it too. Prints only the two
# exports the tests read (progress goes to stderr):
#   export WARDEN_SDK_PYTHON=DIR/py/bin/python
#   export WARDEN_SDK_NODE_DIR=DIR/node
set -euo pipefail
pins="$(cd "$(dirname "$0")/.." && pwd)/crates/warden-cli/tests/sdk"
dir=${1:-/opt/warden-sdk}
py="$dir/py/bin/python"
node="$dir/node/node_modules/.bin/node"

if ! cmp -s "$pins/requirements.txt" "$dir/py/requirements.txt" || ! [ -x "$py" ]; then
  if ! /usr/bin/python3 -c 'import ensurepip' 2>/dev/null; then
    # Debian keeps venv's pip bootstrap in its own package.
    [ "$(id -u)" = 0 ] || { echo "install-sdks.sh: python3-venv is missing (apt-get install -y python3-venv)" >&2; exit 1; }
    echo "install-sdks.sh: apt-get install python3-venv" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
  fi
  echo "install-sdks.sh: pip install -r requirements.txt into $dir/py" >&2
  rm -rf "$dir/py"
  mkdir -p "$dir"
  /usr/bin/python3 -m venv "$dir/py"
  "$dir/py/bin/pip" install --quiet --disable-pip-version-check --no-input --no-cache-dir -r "$pins/requirements.txt" >&2
  cp "$pins/requirements.txt" "$dir/py/requirements.txt"
  chmod -R a+rX "$dir/py"
fi

if ! cmp -s "$pins/package-lock.json" "$dir/node/package-lock.json" || ! [ -x "$node" ] \
    || ! [ -f "$dir/node/node_modules/openai/package.json" ]; then
  command -v npm >/dev/null || { echo "install-sdks.sh: npm is missing (apt-get install -y npm)" >&2; exit 1; }
  echo "install-sdks.sh: npm ci (openai, node) into $dir/node" >&2
  rm -rf "$dir/node"
  mkdir -p "$dir/node"
  cp "$pins/package.json" "$pins/package-lock.json" "$dir/node/"
  npm ci --prefix "$dir/node" --silent --no-audit --no-fund >&2
  chmod -R a+rX "$dir/node"
fi

"$py" -c 'import openai' >/dev/null
"$node" --version >/dev/null
printf 'export WARDEN_SDK_PYTHON=%q\nexport WARDEN_SDK_NODE_DIR=%q\n' "$py" "$dir/node"
