#!/usr/bin/env bash
# Builds a release of warden: the static binary, reproducibly, its packages (npm and .deb, by
# scripts/package.sh), a CycloneDX SBOM and SHA256SUMS over all of it.
#
#     scripts/release.sh [--once] [OUTDIR]        (OUTDIR defaults to dist/)
#
# Reproducible: the binary is built twice, in two target directories, with SOURCE_DATE_EPOCH set
# to the commit's time and every build path remapped (--remap-path-prefix), and the two sha256
# must be identical, else the script fails and prints both. --once builds a single time (CI, to
# keep its cost down). What a user does with the result is in docs/install.md ("Verifying a
# download").
#
# OUTDIR gets:
#   warden-VERSION-linux-x64            the static binary
#   npm/*.tgz, deb/*.deb                the packages (scripts/package.sh)
#   warden-VERSION.cdx.json             the SBOM: every crate compiled into the binary, with its
#                                       version, license, purl and crates.io SHA-256
#   SHA256SUMS                          sha256sum of each of the above
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
once=0
if [ "${1:-}" = "--once" ]; then
  once=1
  shift
fi
out=${1:-dist}
mkdir -p "$out"
out=$(realpath "$out")
case "$out" in "$root"/target|"$root"/target/*) echo "release.sh: OUTDIR must not be under target/" >&2; exit 1 ;; esac

target=x86_64-unknown-linux-gnu
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
cargo_home=${CARGO_HOME:-$HOME/.cargo}

# One build into target directory $1; prints the binary's path.
build() {
  local dir=$1
  # The target's rustflags come from .cargo/config.toml (crt-static); --config adds to them.
  # Paths that differ between builds (the checkout, cargo's home, the target directory) are
  # mapped to fixed names, so that panic locations and debug paths are the same.
  local flags="[\"-C\", \"target-feature=+crt-static\", \"--remap-path-prefix=$root=/warden\", \"--remap-path-prefix=$cargo_home=/cargo\", \"--remap-path-prefix=$dir=/target\"]"
  CARGO_TARGET_DIR=$dir cargo build --release --locked -q -p warden-cli \
    --config "target.$target.rustflags=$flags" >&2
  echo "$dir/$target/release/warden"
}

t0=$SECONDS
echo "release.sh: building (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)" >&2
bin_a=$(build "$root/target/release-a")
sum_a=$(sha256sum "$bin_a" | cut -d' ' -f1)
if [ "$once" = 0 ]; then
  echo "release.sh: building again, in another target directory, to check reproducibility" >&2
  bin_b=$(build "$root/target/release-b")
  sum_b=$(sha256sum "$bin_b" | cut -d' ' -f1)
  if [ "$sum_a" != "$sum_b" ]; then
    echo "release.sh: NOT reproducible: $bin_a $sum_a, $bin_b $sum_b" >&2
    exit 1
  fi
  echo "release.sh: reproducible: both builds are sha256 $sum_a" >&2
fi
version=$("$bin_a" --version | awk '{print $2}')
binary="warden-$version-linux-x64"
rm -rf "${out:?}/npm" "${out:?}/deb"
install -m 0755 "$bin_a" "$out/$binary"
touch -d "@$SOURCE_DATE_EPOCH" "$out/$binary"

scripts/package.sh "$out/$binary" "$out" >&2

# The SBOM: the crates of warden-cli's normal dependency graph for the release target (what is
# compiled into the binary; build scripts' and proc macros' own dependencies are left out),
# from `cargo metadata`, with Cargo.lock's checksums.
sbom="warden-$version.cdx.json"
cargo metadata --format-version 1 --locked --filter-platform "$target" >"$out/.metadata.json"
/usr/bin/python3 - "$out/.metadata.json" "$root/Cargo.lock" "$version" "$SOURCE_DATE_EPOCH" \
  "$(git rev-parse HEAD)" >"$out/$sbom" <<'PY'
import json, sys, uuid, datetime, tomllib
meta, lock_path, version, epoch, commit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
m = json.load(open(meta))
lock = tomllib.load(open(lock_path, "rb"))
checksums = {(p["name"], p["version"]): p.get("checksum") for p in lock.get("package", [])}
pkgs = {p["id"]: p for p in m["packages"]}
nodes = {n["id"]: n for n in m["resolve"]["nodes"]}
root = next(i for i, p in pkgs.items() if p["name"] == "warden-cli")
# Normal dependencies only (dep_kinds kind null), transitively.
seen, stack = set(), [root]
while stack:
    i = stack.pop()
    if i in seen:
        continue
    seen.add(i)
    for d in nodes[i]["deps"]:
        if any(k["kind"] is None for k in d["dep_kinds"]):
            stack.append(d["pkg"])
def component(p):
    local = p["source"] is None
    c = {
        "type": "application" if p["id"] == root else "library",
        "bom-ref": f'pkg:cargo/{p["name"]}@{p["version"]}',
        "name": p["name"],
        "version": p["version"],
        "purl": f'pkg:cargo/{p["name"]}@{p["version"]}',
        "scope": "required",
    }
    if p.get("license"):
        c["licenses"] = [{"expression": p["license"]}]
    sha = checksums.get((p["name"], p["version"]))
    if sha:
        c["hashes"] = [{"alg": "SHA-256", "content": sha}]
    if local:
        c["description"] = p.get("description") or "a crate of the warden workspace"
    return c
deps = []
for i in sorted(seen, key=lambda i: (pkgs[i]["name"], pkgs[i]["version"])):
    on = sorted({f'pkg:cargo/{pkgs[d["pkg"]]["name"]}@{pkgs[d["pkg"]]["version"]}'
                 for d in nodes[i]["deps"] if any(k["kind"] is None for k in d["dep_kinds"])})
    deps.append({"ref": f'pkg:cargo/{pkgs[i]["name"]}@{pkgs[i]["version"]}', "dependsOn": on})
bom = {
    "bomFormat": "CycloneDX",
    "specVersion": "1.5",
    # Derived from the commit, so that the SBOM is reproducible too.
    "serialNumber": "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"warden/{version}/{commit}")),
    "version": 1,
    "metadata": {
        "timestamp": datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "component": {"type": "application", "bom-ref": f"pkg:cargo/warden-cli@{version}", "name": "warden", "version": version,
                      "purl": f"pkg:cargo/warden-cli@{version}",
                      "properties": [{"name": "git:commit", "value": commit}]},
        "tools": {"components": [{"type": "application", "name": "warden scripts/release.sh (cargo metadata)"}]},
    },
    "components": [component(pkgs[i]) for i in sorted(seen, key=lambda i: (pkgs[i]["name"], pkgs[i]["version"])) if i != root],
    "dependencies": deps,
}
# Every reference resolves: to a component, or to warden itself.
refs = {c["bom-ref"] for c in bom["components"]} | {bom["metadata"]["component"]["bom-ref"]}
dangling = sorted({r for d in deps for r in [d["ref"], *d["dependsOn"]]} - refs)
if dangling:
    sys.exit(f"release.sh: the SBOM refers to unknown components: {dangling}")
json.dump(bom, sys.stdout, indent=1, sort_keys=True)
print()
PY
rm -f "$out/.metadata.json"

(cd "$out" && find . -type f \( -name "$binary" -o -name '*.tgz' -o -name '*.deb' -o -name "$sbom" \) -printf '%P\n' \
  | LC_ALL=C sort | xargs sha256sum >SHA256SUMS)
echo "release.sh: $out ($((SECONDS - t0)) s)" >&2
cat "$out/SHA256SUMS"
