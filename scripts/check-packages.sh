#!/usr/bin/env bash
# The CI test of the packages scripts/package.sh builds: installs each one the way a user would,
# into throwaway places, and runs what it installed.
#
# Usage: scripts/check-packages.sh OUTDIR [BINARY]
#
#   OUTDIR  what scripts/package.sh wrote: OUTDIR/npm/*.tgz and OUTDIR/deb/*.deb; the packages for
#           this machine's arch (x64/amd64 or arm64) are checked
#   BINARY  optional: the binary they were built from; the installed binaries must print the same
#           --version line (without it, the npm and .deb binaries must agree with each other and
#           with the packages' version)
#
# npm: `npm install -g --prefix FRESH` of the launcher and platform tarballs, offline, then
# FRESH/bin/warden (the Node launcher) runs --version, doctor and `run -- true`, passes exit statuses
# and signals through, and FRESH/share/man/man1 has the man pages. .deb: `dpkg --root ROOT -i` into
# an empty root, the standard paths listed, the binary run, the man page rendered, the bash
# completion parsed. One PASS/FAIL line per check; exit 1 on any failure. Root or not (dpkg gets
# --force-not-root), bounded by timeouts; about 10 s.
set -euo pipefail
export LC_ALL=C

usage="usage: scripts/check-packages.sh OUTDIR [BINARY]"
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "$usage" >&2
  exit 2
fi
[ -d "$1" ] || {
  echo "check-packages.sh: no directory $1 ($usage)" >&2
  exit 1
}
outdir=$(cd "$1" && pwd)
binary=${2:-}
if [ -n "$binary" ] && [ ! -x "$binary" ]; then
  echo "check-packages.sh: no executable binary at $binary" >&2
  exit 1
fi

started=$SECONDS
failures=0
pass() { printf 'PASS %s\n' "$1"; }
fail() {
  printf 'FAIL %s%s\n' "$1" "${2:+ ($2)}"
  failures=$((failures + 1))
}
last_line() { tail -n 1 <<<"$1" | cut -c 1-200; }
# check NAME CMD...: PASS when CMD exits 0 (its output is kept for the FAIL line only).
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "exit $?: $(last_line "$out")"; fi
}
# check_status NAME WANT CMD...: PASS when CMD exits with status WANT.
check_status() {
  local name=$1 want=$2 out st=0
  shift 2
  out=$("$@" 2>&1) || st=$?
  if [ "$st" = "$want" ]; then pass "$name"; else fail "$name" "exit $st, want $want: $(last_line "$out")"; fi
}
# check_equal NAME GOT WANT
check_equal() {
  if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "got '$2', want '$3'"; fi
}

case $(uname -m) in
  x86_64) npm_arch=x64 deb_arch=amd64 ;;
  aarch64 | arm64) npm_arch=arm64 deb_arch=arm64 ;;
  *)
    echo "check-packages.sh: no packages for $(uname -m)" >&2
    exit 1
    ;;
esac

shopt -s nullglob
launchers=("$outdir"/npm/warden-sandbox-warden-[0-9]*.tgz)
platforms=("$outdir"/npm/warden-sandbox-warden-linux-"$npm_arch"-[0-9]*.tgz)
debs=("$outdir"/deb/warden_*_"$deb_arch".deb)
shopt -u nullglob
for set in launchers:npm/warden-sandbox-warden-VERSION.tgz \
  platforms:npm/warden-sandbox-warden-linux-$npm_arch-VERSION.tgz debs:deb/warden_VERSION_$deb_arch.deb; do
  declare -n files=${set%%:*}
  if [ ${#files[@]} -ne 1 ]; then
    echo "check-packages.sh: want one $outdir/${set#*:}, found ${#files[@]}: ${files[*]:-none}" >&2
    exit 1
  fi
  unset -n files
done
launcher_tgz=${launchers[0]} platform_tgz=${platforms[0]} deb=${debs[0]}

for tool in npm node dpkg dpkg-deb timeout; do
  command -v "$tool" >/dev/null || {
    echo "check-packages.sh: $tool is not installed" >&2
    exit 1
  }
done

# Everything under /var/tmp: `warden run` hides /tmp from the sandbox and refuses / or $HOME as
# its working directory, so the commands run from a scratch directory here; HOME and the state
# directory are scratch too (nothing of the caller's is read or written).
tmp=$(mktemp -d /var/tmp/warden-check-packages.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/home" "$tmp/state" "$tmp/work"
export HOME=$tmp/home XDG_STATE_HOME=$tmp/state
cd "$tmp/work"

version=$(tar -xzOf "$launcher_tgz" package/package.json | node -e \
  'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => console.log(JSON.parse(s).version))')
if [ -n "$binary" ]; then
  want_version=$(timeout 10 "$binary" --version)
else
  want_version=
fi

# The version line a binary prints, checked against BINARY's, or the packages' version.
check_version() { # check_version NAME WARDEN
  local got
  got=$(timeout 20 "$2" --version 2>&1) || true
  if [ -n "$want_version" ]; then
    check_equal "$1" "$got" "$want_version"
  else
    check_equal "$1" "$(cut -d ' ' -f 1-2 <<<"$got")" "warden $version"
    versions+=("$got")
  fi
}
versions=()

# A child of PID (the first one found), by scanning /proc; nothing printed when there is none.
child_of() {
  local f stat fields
  for f in /proc/[0-9]*/stat; do
    { stat=$(<"$f"); } 2>/dev/null || continue
    read -r -a fields <<<"${stat##*) }" # state ppid ...
    if [ "${fields[1]}" = "$1" ]; then
      f=${f#/proc/}
      echo "${f%/stat}"
      return 0
    fi
  done
  return 1
}

# The launcher's status when, during `warden run -- sleep 10`, SIG is sent to the launcher (node,
# which forwards it to warden) or to warden itself (so the launcher re-raises how it died).
launcher_signal_status() { # launcher_signal_status WARDEN SIG launcher|binary
  local n c="" i st=0
  "$1" run --no-audit -- sleep 10 </dev/null >/dev/null 2>&1 &
  n=$!
  for ((i = 0; i < 100; i++)); do
    # Running once warden's own child (the sandbox's PID 1) exists.
    if c=$(child_of "$n") && child_of "$c" >/dev/null; then break; fi
    c=""
    kill -0 "$n" 2>/dev/null || break # the launcher ended already
    sleep 0.1
  done
  if [ -z "$c" ]; then
    kill -KILL "$n" 2>/dev/null || true
    wait "$n" 2>/dev/null || true
    echo "no-child"
    return
  fi
  sleep 0.2
  if [ "$3" = launcher ]; then kill -s "$2" "$n"; else kill -s "$2" "$c"; fi
  wait "$n" || st=$?
  echo "$st"
}

# --- npm ---------------------------------------------------------------------------------------
# Both tarballs are named on the command line (not ./warden-*.tgz: with both arches in OUTDIR that
# would include the other platform's package, which npm refuses with EBADPLATFORM). What npm does:
# it installs the two as top-level global packages, then resolves the launcher's optional
# dependencies. The one for this platform is already satisfied by the top-level copy from the
# tarball (require.resolve from the launcher finds it in PREFIX/lib/node_modules); the others are
# looked up in the registry and, failing, skipped (an optional dependency that cannot be fetched is
# dropped, not an error). A plain install does ask the registry for those manifests (a 404 while
# unpublished; once published, npm could nest the registry's copy under the launcher instead of
# using ours), so the install runs --offline with an empty cache and an unreachable registry:
# nothing can come from a registry, and the check below proves the binary is the tarball's.
# --ignore-scripts: the packages need none. An empty userconfig: the caller's ~/.npmrc (omit=optional,
# say) does not change the result.
fresh=$tmp/npm
: >"$tmp/npmrc"
if out=$(cd "$(dirname "$launcher_tgz")" && timeout 120 npm install -g --prefix "$fresh" \
  --cache "$tmp/npm-cache" --userconfig "$tmp/npmrc" --offline --registry http://127.0.0.1:9/ \
  --ignore-scripts --no-audit --no-fund --no-update-notifier --loglevel=warn \
  "./$(basename "$launcher_tgz")" "./$(basename "$platform_tgz")" 2>&1); then
  pass "npm: npm install -g --offline of $(basename "$launcher_tgz") and $(basename "$platform_tgz")"
else
  fail "npm: npm install -g --offline" "$(last_line "$out")"
fi
modules=$fresh/lib/node_modules/@warden-sandbox
platform_dir=$modules/warden-linux-$npm_arch
if [ -f "$platform_dir/package.json" ] && [ ! -e "$modules/warden/node_modules" ] &&
  cmp -s "$platform_dir/bin/warden" <(tar -xzOf "$platform_tgz" package/bin/warden); then
  pass "npm: @warden-sandbox/warden-linux-$npm_arch installed from the local tarball (nothing nested, same binary)"
else
  fail "npm: @warden-sandbox/warden-linux-$npm_arch installed from the local tarball" \
    "$(find "$modules" -maxdepth 4 -name package.json 2>/dev/null | tr '\n' ' ')"
fi

w=$fresh/bin/warden
check_version "npm: warden --version" "$w"
check "npm: warden doctor" timeout 20 "$w" doctor
check "npm: warden run --no-audit -- true" timeout 20 "$w" run --no-audit -- true
check_status "npm: warden run passes exit status 7 through" 7 \
  timeout 20 "$w" run --no-audit -- sh -c 'exit 7'
check_status "npm: a command killed by SIGTERM gives 143" 143 \
  timeout 20 "$w" run --no-audit -- sh -c 'kill -TERM $$'
check_equal "npm: SIGTERM to the launcher is forwarded (143)" \
  "$(launcher_signal_status "$w" TERM launcher 2>/dev/null)" 143
check_equal "npm: SIGHUP to the launcher is forwarded (129)" \
  "$(launcher_signal_status "$w" HUP launcher 2>/dev/null)" 129
check_equal "npm: warden killed by SIGKILL, the launcher re-raises it (137)" \
  "$(launcher_signal_status "$w" KILL binary 2>/dev/null)" 137

man1=$fresh/share/man/man1
pages=$(tar -tzf "$launcher_tgz" | grep -c '^package/man/.*\.1$' || true)
linked=$(find "$man1" -name 'warden*.1' 2>/dev/null | wc -l)
if [ -f "$man1/warden.1" ] && [ -f "$man1/warden-run.1" ] && [ "$linked" = "$pages" ]; then
  pass "npm: $linked man pages linked into PREFIX/share/man/man1"
else
  fail "npm: man pages linked into PREFIX/share/man/man1" "$linked of $pages"
fi
if command -v man >/dev/null; then
  # man finds pages next to the bin directory on PATH (PREFIX/bin -> PREFIX/share/man).
  # (man prints the link's target.)
  found=$(PATH=$fresh/bin:$PATH MANPATH='' timeout 10 man -w warden 2>&1 || true)
  check_equal "npm: man -w warden finds the page through PATH" \
    "$(readlink -f "$found" 2>/dev/null || echo "$found")" "$(readlink -f "$man1/warden.1")"
fi
completions=$modules/warden/completions
if [ -s "$completions/warden.bash" ] && [ -s "$completions/_warden" ] && [ -s "$completions/warden.fish" ]; then
  pass "npm: completions/warden.bash, _warden, warden.fish in the package"
else
  fail "npm: completions in the package" "$(find "$completions" -maxdepth 1 -printf '%f ' 2>&1)"
fi
check "npm: bash -n completions/warden.bash" bash -n "$completions/warden.bash"

# --- .deb --------------------------------------------------------------------------------------
root=$tmp/root
admin=$root/var/lib/dpkg
mkdir -p "$admin/info" "$admin/updates" "$admin/triggers"
: >"$admin/status"
: >"$admin/available"
dpkg_opts=(--root="$root" --admindir="$admin" --force-script-chrootless --log=/dev/null)
[ "$(id -u)" = 0 ] || dpkg_opts+=(--force-not-root)
check "deb: dpkg --root ROOT -i $(basename "$deb")" timeout 60 dpkg "${dpkg_opts[@]}" -i "$deb"

control=$(dpkg-deb --field "$deb" Package Version Architecture Depends Pre-Depends 2>&1)
deb_version=${version//-/\~}
check_equal "deb: control fields (no Depends)" "$control" \
  "$(printf 'Package: warden\nVersion: %s\nArchitecture: %s' "$deb_version" "$deb_arch")"
owners=$(dpkg-deb --contents "$deb" | awk '$2 != "root/root" { print $6 }' | head -3)
check_equal "deb: every file owned by root/root" "$owners" ""

listed=$(timeout 20 dpkg "${dpkg_opts[@]}" -L warden 2>&1 || true)
missing=()
for path in /usr/bin/warden /usr/share/man/man1/warden.1.gz /usr/share/man/man1/warden-run.1.gz \
  /usr/share/man/man1/warden-codex.1.gz /usr/share/bash-completion/completions/warden \
  /usr/share/zsh/vendor-completions/_warden /usr/share/fish/vendor_completions.d/warden.fish \
  /usr/share/doc/warden/README.md /usr/share/doc/warden/copyright; do
  grep -qxF "$path" <<<"$listed" && [ -e "$root$path" ] || missing+=("$path")
done
check_equal "deb: dpkg -L lists the binary, man pages, completions and docs at the standard paths" \
  "${missing[*]:-}" ""
check "deb: dpkg -V (md5sums) verifies" timeout 20 dpkg "${dpkg_opts[@]}" -V warden

d=$root/usr/bin/warden
check_version "deb: warden --version" "$d"
check "deb: warden doctor" timeout 20 "$d" doctor
check "deb: warden run --no-audit -- true" timeout 20 "$d" run --no-audit -- true
check_status "deb: a command killed by SIGTERM gives 143" 143 \
  timeout 20 "$d" run --no-audit -- sh -c 'kill -TERM $$'
if [ -x "$platform_dir/bin/warden" ] && cmp -s "$d" "$platform_dir/bin/warden"; then
  pass "deb and npm hold the same binary"
else
  fail "deb and npm hold the same binary"
fi
if [ ${#versions[@]} -eq 2 ]; then
  check_equal "deb and npm binaries print the same --version" "${versions[0]}" "${versions[1]}"
fi

page=$root/usr/share/man/man1/warden.1.gz
if command -v man >/dev/null; then
  rendered=$(MANPAGER=cat MANWIDTH=80 timeout 20 man -l "$page" 2>"$tmp/man.err" || true)
  if grep -q '^SYNOPSIS' <<<"$rendered" && [ ! -s "$tmp/man.err" ]; then
    pass "deb: man -l renders warden.1.gz (no warnings)"
  else
    fail "deb: man -l renders warden.1.gz" "$(last_line "$(cat "$tmp/man.err")")"
  fi
elif command -v groff >/dev/null; then
  warnings=$(gzip -dc "$page" | timeout 20 groff -man -Tutf8 -z 2>&1 || echo "groff failed")
  check_equal "deb: groff renders warden.1.gz without warnings" "$warnings" ""
else
  echo "SKIP deb: rendering warden.1.gz (neither man nor groff installed)"
fi
bash_completion=$root/usr/share/bash-completion/completions/warden
check "deb: bash -n the bash completion" bash -n "$bash_completion"
# shellcheck disable=SC1090 # the completion script, sourced in a child bash
check_equal "deb: the bash completion registers for warden" \
  "$(bash -c 'source "$1" && complete -p warden' _ "$bash_completion" 2>&1 | cut -d ' ' -f 1)" "complete"

printf '%s in %d s: %s\n' "$([ "$failures" = 0 ] && echo PASS || echo FAIL)" $((SECONDS - started)) \
  "$([ "$failures" = 0 ] && echo "all package checks" || echo "$failures check(s) failed")"
[ "$failures" = 0 ]
