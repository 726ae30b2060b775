#!/usr/bin/env bash
# Builds warden's packages from one release binary, the way they are published.
#
# Usage: scripts/package.sh [--arch x64|arm64] BINARY OUTDIR
#
#   BINARY  a static warden binary (cargo build --release --locked gives
#           target/x86_64-unknown-linux-gnu/release/warden; for arm64 build with
#           --target aarch64-unknown-linux-gnu)
#   OUTDIR  where the packages go (created):
#     OUTDIR/npm/warden-sandbox-warden-VERSION.tgz           the launcher, @warden-sandbox/warden
#     OUTDIR/npm/warden-sandbox-warden-linux-ARCH-VERSION.tgz the binary, @warden-sandbox/warden-linux-ARCH
#     OUTDIR/deb/warden_VERSION_DEBARCH.deb                  /usr/bin/warden, man pages, completions
#   --arch  the binary's architecture, x64 (default: read from the binary's ELF header) or arm64
#
# The version is the second word of `BINARY --version`; the man pages (`BINARY man --out`) and the
# bash/zsh/fish completions (`BINARY completions SHELL`) come from BINARY itself, so BINARY must
# run here (set WARDEN_PACKAGE_RUNNER=qemu-aarch64-static, say, to package an arm64 binary on an
# x64 machine). npm is used for `npm pack` only (nothing is fetched), dpkg-deb for the .deb.
#
# npm, as @openai/codex does it: the launcher package holds bin/warden.js (a Node script that runs
# the binary of the platform package for process.platform/process.arch), the man pages (its "man"
# field: a global install links them into PREFIX/share/man/man1), the completions and a README,
# and lists every platform package in optionalDependencies at this exact version; each platform
# package has "os"/"cpu", so npm installs only the one for the machine. No install scripts, no
# download. Templates: packaging/npm/warden/ (launcher) and packaging/npm/platform/ (per
# platform); @VERSION@, @ARCH@, @LICENSE@ and @REPOSITORY@ are filled in here. The launcher tarball
# is the same for every arch; building both arches into one OUTDIR gives all three tarballs.
#
# Reproducible: every file gets the mtime SOURCE_DATE_EPOCH (default: the date of the commit the
# binary names in --version, else of HEAD), fixed modes, root ownership; dpkg-deb sorts the tree
# and compresses single-threaded; npm pack sorts and normalises mtimes and ownership itself; man
# pages are gzipped with -n (no name, no timestamp). The binary is packaged as it is (not
# stripped), so it stays identical to the one SHA256SUMS names.
#
# Environment: SOURCE_DATE_EPOCH; WARDEN_PACKAGE_RUNNER (a command prefix to run BINARY with, split
# on whitespace); WARDEN_DEB_MAINTAINER (the .deb's Maintainer field); WARDEN_REPOSITORY_URL (the
# packages' repository and homepage).
set -euo pipefail
umask 022

die() {
  printf 'package.sh: %s\n' "$*" >&2
  exit 1
}
usage="usage: scripts/package.sh [--arch x64|arm64] BINARY OUTDIR"

repo=$(cd "$(dirname "$0")/.." && pwd)
repository_url=${WARDEN_REPOSITORY_URL:-https://github.com/warden-sandbox/warden}
maintainer=${WARDEN_DEB_MAINTAINER:-warden maintainers <maintainers@warden-sandbox.invalid>}

arch=
while [ $# -gt 0 ]; do
  case $1 in
    --arch)
      [ $# -ge 2 ] || die "--arch needs a value: x64 or arm64"
      arch=$2
      shift 2
      ;;
    --arch=*)
      arch=${1#--arch=}
      shift
      ;;
    -h | --help)
      echo "$usage"
      exit 0
      ;;
    --)
      shift
      break
      ;;
    -*) die "unknown option '$1' ($usage)" ;;
    *) break ;;
  esac
done
[ $# -eq 2 ] || {
  echo "$usage" >&2
  exit 2
}
binary=$1
outdir=$2

case $arch in
  "" | x64 | arm64) ;;
  *) die "unknown arch '$arch': use x64 or arm64" ;;
esac

[ -e "$binary" ] || die "no binary at $binary (build it: cargo build --release --locked)"
[ -f "$binary" ] || die "$binary is not a regular file"
[ -x "$binary" ] || die "$binary is not executable"
binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")

# --- The ELF header: 64-bit little-endian, the machine says the arch, and no interpreter. --------
read_u() { # read_u OFFSET BYTES: an unsigned little-endian integer of the binary (x86/arm hosts)
  od -An -v -t "u$2" -j "$1" -N "$2" "$binary" | tr -d ' \n'
}
ident=$(od -An -v -t x1 -N 6 "$binary" | tr -d ' \n')
[ "$ident" = 7f454c460201 ] || die "$binary is not a 64-bit little-endian ELF executable"
case $(read_u 18 2) in
  62) elf_arch=x64 ;;
  183) elf_arch=arm64 ;;
  *) die "$binary is an ELF executable for machine $(read_u 18 2), neither x86-64 nor aarch64" ;;
esac
[ -n "$arch" ] || arch=$elf_arch
[ "$arch" = "$elf_arch" ] || die "--arch $arch, but $binary is built for $elf_arch"
phoff=$(read_u 32 8)
phentsize=$(read_u 54 2)
phnum=$(read_u 56 2)
for ((i = 0; i < phnum; i++)); do
  # PT_INTERP (3): a dynamic loader, hence shared libraries; the packages declare no dependencies.
  [ "$(read_u $((phoff + i * phentsize)) 4)" != 3 ] ||
    die "$binary is dynamically linked (it names an ELF interpreter); package the static build"
done

runner=()
if [ -n "${WARDEN_PACKAGE_RUNNER:-}" ]; then
  read -r -a runner <<<"$WARDEN_PACKAGE_RUNNER"
fi
run_binary() {
  "${runner[@]}" "$binary" "$@"
}

# --- The version: `warden 0.1.0 (a91fc2ee97c0 2026-12-02)`. ------------------------------------
version_line=$(run_binary --version 2>&1) ||
  die "$binary --version failed${version_line:+: ${version_line%%$'\n'*}}"
version_line=${version_line%%$'\n'*}
read -r name version rest <<<"$version_line" || true
semver='^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$'
if [ "${name:-}" != warden ] || ! [[ ${version:-} =~ $semver ]]; then
  die "cannot read a version from '$binary --version' (it printed: $version_line)"
fi
commit=${rest:-}
commit=${commit#(}
commit=${commit%% *}

# A semver pre-release (0.2.0-rc.1) sorts before its release in Debian only with "~".
deb_version=${version//-/\~}
case $arch in
  x64) deb_arch=amd64 ;;
  arm64) deb_arch=arm64 ;;
esac

license=$(sed -n '/^\[workspace\.package\]/,/^\[/ s/^license *= *"\(.*\)".*/\1/p' "$repo/Cargo.toml")
[ -n "$license" ] || die "no license in [workspace.package] of $repo/Cargo.toml"

if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
  [[ $SOURCE_DATE_EPOCH =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH is not a number of seconds: $SOURCE_DATE_EPOCH"
  sde=$SOURCE_DATE_EPOCH
elif [[ $commit =~ ^[0-9a-f]{7,40}$ ]] && sde=$(git -C "$repo" log -1 --format=%ct "$commit" -- 2>/dev/null) && [ -n "$sde" ]; then
  :
elif sde=$(git -C "$repo" log -1 --format=%ct 2>/dev/null) && [ -n "$sde" ]; then
  echo "package.sh: commit ${commit:-?} of --version is not in $repo; mtimes from HEAD's date" >&2
else
  die "no SOURCE_DATE_EPOCH and no git history in $repo to take a date from: set SOURCE_DATE_EPOCH"
fi
export SOURCE_DATE_EPOCH=$sde

command -v npm >/dev/null || die "npm is not installed (it packs the npm packages)"
command -v node >/dev/null || die "node is not installed (it fills in the package.json templates)"
command -v dpkg-deb >/dev/null || die "dpkg-deb is not installed (it builds the .deb)"

mkdir -p "$outdir/npm" "$outdir/deb"
outdir=$(cd "$outdir" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/warden-package.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "packaging $version_line for linux-$arch" >&2

# --- What the binary generates: man pages and completions. -------------------------------------
gen=$work/gen
run_binary man --out "$gen/man" >/dev/null || die "$binary man --out failed"
mkdir -p "$gen/completions"
run_binary completions bash >"$gen/completions/warden.bash" || die "$binary completions bash failed"
run_binary completions zsh >"$gen/completions/_warden" || die "$binary completions zsh failed"
run_binary completions fish >"$gen/completions/warden.fish" || die "$binary completions fish failed"
[ -s "$gen/man/warden.1" ] || die "$binary man --out wrote no warden.1"
mapfile -t man_pages < <(cd "$gen/man" && LC_ALL=C ls -- *.1)

# Fixed modes (dirs and executables 0755, the rest 0644) and mtimes for a staged tree.
normalise() {
  find "$1" -type d -exec chmod 0755 {} +
  find "$1" -type f ! -perm -u+x -exec chmod 0644 {} +
  find "$1" -type f -perm -u+x -exec chmod 0755 {} +
  find "$1" -exec touch -h -d "@$sde" {} +
}

# package.json from a template: @NAME@ replaced in every string, and the man list when given.
fill_json() { # fill_json TEMPLATE DEST [MAN_JSON]
  node - "$@" "$version" "$arch" "$license" "$repository_url" <<'EOF'
const fs = require("fs");
const args = process.argv.slice(2);
const [src, dest] = args;
const man = args.length === 7 ? args[2] : null;
const [VERSION, ARCH, LICENSE, REPOSITORY] = args.slice(-4);
const vars = { VERSION, ARCH, LICENSE, REPOSITORY };
const fill = (v) => {
  if (typeof v === "string") {
    return v.replace(/@([A-Z]+)@/g, (m, k) => {
      if (!(k in vars)) throw new Error(`${src}: nothing to put in for ${m}`);
      return vars[k];
    });
  }
  if (Array.isArray(v)) return v.map(fill);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [fill(k), fill(x)]));
  return v;
};
const pkg = fill(JSON.parse(fs.readFileSync(src, "utf8")));
if (man !== null) pkg.man = JSON.parse(man);
fs.writeFileSync(dest, JSON.stringify(pkg, null, 2) + "\n");
EOF
}

fill_text() { # fill_text TEMPLATE DEST
  sed -e "s|@VERSION@|$version|g" -e "s|@ARCH@|$arch|g" "$1" >"$2"
}

# npm pack DIR into OUTDIR/npm, offline; prints the tarball's path.
npm_pack() {
  local file
  file=$(cd "$work" && npm pack "$1" --pack-destination "$outdir/npm" --ignore-scripts --silent \
    --cache "$work/npm-cache" --offline --loglevel=error) || die "npm pack $1 failed"
  echo "$outdir/npm/${file##*$'\n'}"
}

# --- npm: the platform package. ---------------------------------------------------------------
templates=$repo/packaging/npm
platform=$work/npm/warden-linux-$arch
mkdir -p "$platform/bin"
cp "$binary" "$platform/bin/warden"
fill_json "$templates/platform/package.json" "$platform/package.json"
fill_text "$templates/platform/README.md" "$platform/README.md"
normalise "$platform"

# --- npm: the launcher. -----------------------------------------------------------------------
launcher=$work/npm/warden
mkdir -p "$launcher/bin" "$launcher/man" "$launcher/completions"
cp "$templates/warden/bin/warden.js" "$launcher/bin/warden.js"
chmod 0755 "$launcher/bin/warden.js"
cp "$templates/warden/README.md" "$launcher/README.md"
cp "${man_pages[@]/#/$gen/man/}" "$launcher/man/"
cp "$gen/completions/warden.bash" "$gen/completions/_warden" "$gen/completions/warden.fish" "$launcher/completions/"
man_json=$(printf '"man/%s",' "${man_pages[@]}")
fill_json "$templates/warden/package.json" "$launcher/package.json" "[${man_json%,}]"
# shellcheck disable=SC2016 # JavaScript template literals
node -e '
  const p = require(process.argv[1]);
  const want = `@warden-sandbox/warden-linux-${process.argv[2]}`;
  if (!p.optionalDependencies || p.optionalDependencies[want] !== p.version) {
    console.error(`package.sh: the launcher template does not list ${want}@${p.version} in optionalDependencies`);
    process.exit(1);
  }' "$launcher/package.json" "$arch" || exit 1
normalise "$launcher"

platform_tgz=$(npm_pack "$platform")
launcher_tgz=$(npm_pack "$launcher")

# --- The .deb. --------------------------------------------------------------------------------
root=$work/deb/root
install -D -m 0755 "$binary" "$root/usr/bin/warden"
mkdir -p "$root/usr/share/man/man1"
for page in "${man_pages[@]}"; do
  gzip -n -9 -c "$gen/man/$page" >"$root/usr/share/man/man1/$page.gz"
done
install -D -m 0644 "$gen/completions/warden.bash" "$root/usr/share/bash-completion/completions/warden"
install -D -m 0644 "$gen/completions/_warden" "$root/usr/share/zsh/vendor-completions/_warden"
install -D -m 0644 "$gen/completions/warden.fish" "$root/usr/share/fish/vendor_completions.d/warden.fish"
install -D -m 0644 "$repo/README.md" "$root/usr/share/doc/warden/README.md"
{
  cat <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: warden
Source: $repository_url

Files: *
Copyright: the warden authors
License: $license
EOF
  if [ "$license" = Apache-2.0 ]; then
    echo " On Debian systems the full text of the Apache License 2.0 is in"
    echo " /usr/share/common-licenses/Apache-2.0."
    echo " ."
  fi
  cat <<'EOF'
 /usr/bin/warden is statically linked. It also contains the Rust crates it
 is built from, under their own licenses (MIT, Apache-2.0 and the others
 deny.toml allows; the release's CycloneDX SBOM lists each crate with its
 license), and the GNU C Library (LGPL-2.1-or-later, see
 /usr/share/common-licenses/LGPL-2.1).
EOF
} >"$root/usr/share/doc/warden/copyright"
chmod 0644 "$root/usr/share/doc/warden/copyright"

# Installed-Size as dpkg-gencontrol counts it: KiB per file rounded up, 1 per directory.
installed_size=$(cd "$root" && find usr \( -type f -printf '%s\n' \) -o \( -printf '1024\n' \) |
  awk '{ s += int(($1 + 1023) / 1024) } END { print s }')
mkdir -p "$root/DEBIAN"
cat >"$root/DEBIAN/control" <<EOF
Package: warden
Version: $deb_version
Architecture: $deb_arch
Maintainer: $maintainer
Installed-Size: $installed_size
Section: utils
Priority: optional
Homepage: $repository_url
Description: run AI coding agents and any command with least privilege
 warden confines a command (the Codex CLI first, anything in general) with
 Linux namespaces, a read-only root, masked secrets, Landlock, seccomp,
 dropped capabilities and rlimits, and explains every denial. One static
 binary: no helper processes, no setuid, no dependencies.
EOF
(cd "$root" && find usr -type f | LC_ALL=C sort | xargs md5sum) >"$root/DEBIAN/md5sums"
normalise "$root"

deb=$outdir/deb/warden_${deb_version}_${deb_arch}.deb
deb_opts=(--root-owner-group -Zxz)
# Several xz threads give another (equally valid) stream than one: pin it where dpkg-deb can.
if dpkg-deb --help 2>/dev/null | grep -- --threads-max >/dev/null; then
  deb_opts+=(--threads-max=1)
fi
dpkg-deb "${deb_opts[@]}" --build "$root" "$deb" >/dev/null || die "dpkg-deb --build failed"

printf '%s\n' "$launcher_tgz" "$platform_tgz" "$deb"
