#!/usr/bin/env bash
# Checks deploy/ (docs/deploy.md, "What is validated"), offline:
#
# 1. the Kubernetes manifests, rendered by `kubectl kustomize` (or concatenated when kubectl is
#    missing), against the API schemas of Kubernetes 1.30, 1.33 and 1.37 with kubernetes-validate
#    --strict (unknown fields are errors), and the example Secrets the same way; a manifest
#    with a misspelled field must fail, so the validation cannot pass vacuously;
# 2. what no schema knows, with scripts/check-deploy.py --self-test: the sandbox's securityContext,
#    probes on /livez and /readyz, a grace period longer than the drain, secrets where the flags
#    say, state off TMPDIR, the image's user/port/entrypoint, selectors; then each of those checks
#    is shown to catch a deliberate breakage;
# 3. with podman: the image, built by deploy/build-image.sh and run as the pod runs it (read-only
#    root, uid 65534, the documented security options): its config, `warden --version`, `warden
#    doctor` (every layer), Codex inside the sandbox, the sandbox blind to /run/secrets and to
#    warden's state, the audit chain; then `serve_smoke` once the image's warden has `serve`.
#
# WARDEN_BIN: the static warden to put in the image (default: build-image.sh's release build);
# WARDEN_CODEX_BIN: Codex's native binary (default: scripts/install-codex.sh). With CI set, a
# missing podman is an error; elsewhere the image part is skipped with a note.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VALIDATE=1.37.0
# 1.30: the oldest with every field used (appArmorProfile, preStop sleep), behind feature gates;
# 1.33: user namespaces and procMount on by default; 1.37: the newest schema the package ships.
K8S_VERSIONS="1.30.0 1.33.0 1.37.0"
# kubernetes-validate and its dependencies, pinned (the venv is rebuilt when this list changes).
REQUIREMENTS="kubernetes-validate==$KUBERNETES_VALIDATE jsonschema==4.26.0 jsonschema-specifications==2025.9.1
referencing==0.37.0 rpds-py==2026.9.1 attrs==26.1.0 PyYAML==6.0.4 packaging==26.4 importlib_resources==7.1.0
typing_extensions==4.16.0"
IMAGE=localhost/warden-check:latest

log() { printf '\n==> %s\n' "$*"; }
die() { echo "check-deploy: $*" >&2; exit 1; }
start=$SECONDS
out=target/deploy
mkdir -p "$out"

# --- 1. schemas ------------------------------------------------------------------------------
venv_python() {
  local digest cache venv
  digest=$(printf '%s' "$REQUIREMENTS" | sha256sum | cut -c1-12)
  cache=${XDG_CACHE_HOME:-${HOME:-$PWD/target}/.cache}
  venv="$cache/warden/check-deploy-venv-$digest"
  if [ ! -e "$venv/.complete" ]; then
    echo "installing kubernetes-validate $KUBERNETES_VALIDATE into $venv (PyPI)" >&2
    mkdir -p "$cache/warden"
    rm -rf "$venv.tmp.$$"
    /usr/bin/python3 -m venv "$venv.tmp.$$" >&2
    # shellcheck disable=SC2086 # one requirement a word
    "$venv.tmp.$$/bin/python" -m pip install --quiet --disable-pip-version-check --no-input $REQUIREMENTS >&2
    touch "$venv.tmp.$$/.complete"
    rm -rf "$venv" && mv "$venv.tmp.$$" "$venv"
  fi
  echo "$venv/bin/python"
}

log "deploy/kubernetes: kubernetes-validate $KUBERNETES_VALIDATE --strict against Kubernetes $K8S_VERSIONS"
if ! /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null; then
  [ "$(id -u)" = 0 ] || die "/usr/bin/python3 with venv is missing (apt-get install python3-venv)"
  echo "installing python3-venv (Debian)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
py=$(venv_python)
"$py" -m kubernetes_validate --version | grep -xF "$KUBERNETES_VALIDATE" >/dev/null || die "the venv's kubernetes-validate is not $KUBERNETES_VALIDATE"

# Every manifest is either in the kustomization or the example Secrets.
for f in deploy/kubernetes/*.yaml; do
  base=$(basename "$f")
  case "$base" in kustomization.yaml|secrets.example.yaml) continue ;; esac
  grep -qE "^  - $base\$" deploy/kubernetes/kustomization.yaml || die "$f is not in deploy/kubernetes/kustomization.yaml"
done
rendered="$out/kubernetes.yaml"
if command -v kubectl >/dev/null; then
  kubectl kustomize deploy/kubernetes > "$rendered"
  echo "rendered with $(kubectl version --client 2>/dev/null | grep -i kustomize || echo 'kubectl kustomize')"
else
  echo "note: kubectl is missing; validating the kustomization's resources as they are (no kustomize render)"
  "$py" -c 'import sys, yaml; print("\n---\n".join(open("deploy/kubernetes/" + r).read() for r in yaml.safe_load(open(sys.argv[1]))["resources"]))' \
    deploy/kubernetes/kustomization.yaml > "$rendered"
fi
for v in $K8S_VERSIONS; do
  "$py" -m kubernetes_validate --strict --quiet -k "$v" "$rendered" deploy/kubernetes/secrets.example.yaml \
    || die "the manifests do not validate against Kubernetes $v"
done
echo "$(grep -c '^kind:' "$rendered") resources and 2 example Secrets valid against $K8S_VERSIONS"
# The control: a field the API does not have must be refused, or --strict is not in force.
sed 's/^\(      \)hostUsers: false$/\1hostUser: false/' "$rendered" > "$out/misspelled.yaml"
! cmp -s "$rendered" "$out/misspelled.yaml" || die "cannot find hostUsers in $rendered to misspell"
if "$py" -m kubernetes_validate --strict --quiet -k 1.33.0 "$out/misspelled.yaml" >/dev/null 2>&1; then
  die "kubernetes-validate accepted a misspelled field (hostUser): the validation proves nothing"
fi
echo "control: a misspelled field (hostUser) is refused"

# --- 2. consistency --------------------------------------------------------------------------
log "deploy/kubernetes: consistency with warden and the image (scripts/check-deploy.py --self-test)"
"$py" scripts/check-deploy.py "$rendered" deploy/kubernetes/secrets.example.yaml deploy/Containerfile --self-test

# --- 3. the image ----------------------------------------------------------------------------
# podman as the container tests run it (crates/warden-cli/tests/it/container.rs): runc, and
# ulimits this machine needs.
podman_run() {
  podman --runtime runc run --rm --pull=never --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 "$@"
}
# The pod's settings (deploy/kubernetes/deployment.yaml) in podman's words.
POD_OPTS=(--read-only --security-opt unmask=ALL --security-opt seccomp=unconfined "--tmpfs=/tmp:rw,nosuid,nodev,mode=1777")

# `warden serve` in the image, as the Deployment starts it, on a published loopback port: the
# probes, /v1/models with and without a client key, then SIGTERM (the drain) and the audit chain
# on stdout.
serve_smoke() {
  local image=$1 hostdir=$2 key name port code pid t0 path audit=- event
  key=$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')
  [ ${#key} = 40 ] || die "cannot make a client key"
  name="warden-check-serve-$$"
  mkdir "$hostdir/serve-state"
  if [ "$(id -u)" = 0 ]; then chown 65534:65534 "$hostdir/serve-state"; else chmod 0777 "$hostdir/serve-state"; fi
  # Attached, in the background: stdout (the audit records) and stderr (logs) kept apart.
  podman_run --name "$name" "${POD_OPTS[@]}" -p 127.0.0.1::11435 -v "$hostdir/serve-state:/var/lib/warden" \
    -e PROXY_API_KEY="$key" -e WARDEN_CHECK_MODEL_KEY=not-a-real-model-key -e WORKER_SHUTDOWN_GRACE_MS=5000 \
    "$image" --listen 0.0.0.0:11435 --audit-log "$audit" --credential-env WARDEN_CHECK_MODEL_KEY \
    --credential-upstream http://127.0.0.1:9/v1/responses >"$hostdir/serve.out" 2>"$hostdir/serve.err" &
  pid=$!
  # shellcheck disable=SC2064 # the name is fixed now
  trap "podman rm -f $name >/dev/null 2>&1 || true; rm -rf '$hostdir'" EXIT
  fail() { tail -n 40 "$hostdir/serve.err" >&2; die "serve: $*"; }
  port=
  for _ in $(seq 1 100); do
    port=$(podman port "$name" 11435/tcp 2>/dev/null | head -n 1 | sed 's/.*://') && [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || fail "the container ended at once"
    sleep 0.1
  done
  [ -n "$port" ] || fail "no published port"
  for path in /livez /readyz; do
    code=000
    for _ in $(seq 1 120); do
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port$path" || true)
      [ "$code" = 200 ] && break
      kill -0 "$pid" 2>/dev/null || fail "the container ended before $path answered 200"
      sleep 0.5
    done
    [ "$code" = 200 ] || fail "$path answered $code, not 200, within 60 s"
  done
  curl -sf --max-time 5 -H "Authorization: Bearer $key" "http://127.0.0.1:$port/v1/models" > "$hostdir/models.json" \
    || fail "/v1/models with the client key failed"
  grep -q '"data"' "$hostdir/models.json" || fail "/v1/models has no data: $(cat "$hostdir/models.json")"
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/v1/models" || true)
  [ "$code" = 401 ] || fail "/v1/models without a key answered $code, not 401"
  t0=$(date +%s%N)
  podman stop -t 30 "$name" >/dev/null
  code=0
  wait "$pid" || code=$?
  t0=$(( ($(date +%s%N) - t0) / 1000000 ))
  [ "$code" = 0 ] || fail "exit status $code after SIGTERM, not 0"
  [ -s "$hostdir/serve.out" ] || fail "no audit record on stdout (--audit-log -)"
  ! grep -qv '^{"v":1,' "$hostdir/serve.out" || fail "stdout holds more than audit records: $(grep -v '^{"v":1,' "$hostdir/serve.out" | head -n 3)"
  "$WARDEN_BIN" audit verify --audit-log "$hostdir/serve.out" || fail "the audit chain on stdout does not verify"
  # The gateway's own records and its workers' sessions' (run.start), all in the one chain.
  for event in serve.start run.start serve.stop; do
    grep -q "\"event\":\"$event\"" "$hostdir/serve.out" || fail "no $event record on stdout"
  done
  echo "serve: /livez, /readyz, /v1/models (401 without a key); drained and exited 0 $t0 ms after SIGTERM; stdout is an intact audit chain"
}

if ! command -v podman >/dev/null || [ ! -x /usr/sbin/runc ]; then
  [ -z "${CI:-}" ] || die "CI must build and run the image; podman or runc is missing (apt-get install podman runc)"
  log "podman or runc missing: the image is not built (apt-get install podman runc)"
  echo "deploy checks passed (manifests only) in $((SECONDS - start)) s"
  exit 0
fi

log "deploy/Containerfile: build with deploy/build-image.sh and run with podman"
if [ -z "${WARDEN_BIN:-}" ]; then
  cargo build --release --locked -p warden-cli
  WARDEN_BIN=target/x86_64-unknown-linux-gnu/release/warden
fi
WARDEN_BIN=$(realpath "$WARDEN_BIN")
export WARDEN_BIN
t0=$SECONDS
podman rmi -f "$IMAGE" "${IMAGE%:*}:$("$WARDEN_BIN" --version | awk '{print $2}')" >/dev/null 2>&1 || true
deploy/build-image.sh --warden "$WARDEN_BIN" --tag "$IMAGE" >/dev/null
echo "built $IMAGE in $((SECONDS - t0)) s ($(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1 / 1e6}'))"

config=$(podman image inspect --format '{{.Config.User}} {{.Config.Entrypoint}} {{.Config.Cmd}} {{range $p, $_ := .Config.ExposedPorts}}{{$p}}{{end}}' "$IMAGE")
[ "$config" = "65534:65534 [/warden serve] [--listen 0.0.0.0:11435 --audit-log -] 11435/tcp" ] \
  || die "image config is '$config'"
podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$IMAGE" | grep -x 'CODEX_BIN=/usr/local/bin/codex' >/dev/null \
  || die "the image does not set CODEX_BIN=/usr/local/bin/codex"
version=$(podman_run --entrypoint /warden "$IMAGE" --version)
[ "$version" = "$("$WARDEN_BIN" --version)" ] || die "the image's warden says '$version'"
echo "config: user 65534:65534, entrypoint /warden serve, port 11435, CODEX_BIN; $version"

# A state directory like the pod's emptyDir, and a stand-in secret below /run/secrets.
hostdir=$(mktemp -d "${TMPDIR:-/tmp}/warden-check-deploy.XXXXXX")
trap 'rm -rf "$hostdir"' EXIT
mkdir "$hostdir/state"
echo "NOT-A-REAL-KEY-d3pl0y" > "$hostdir/api-key"
if [ "$(id -u)" = 0 ]; then chown -R 65534:65534 "$hostdir/state" "$hostdir/api-key"; else chmod 0777 "$hostdir/state"; chmod 0644 "$hostdir/api-key"; fi
chmod 0400 "$hostdir/api-key" 2>/dev/null || true
# in_pod_as ENTRYPOINT ARG...: a command in the image as the pod would run it.
in_pod_as() {
  local entrypoint=$1
  shift
  podman_run "${POD_OPTS[@]}" -v "$hostdir/state:/var/lib/warden" \
    -v "$hostdir/api-key:/run/secrets/warden/model/api-key:ro" --entrypoint "$entrypoint" "$IMAGE" "$@" 2>&1
}
in_pod() { in_pod_as /warden "$@"; }

doctor=$(in_pod doctor) || { echo "$doctor" >&2; die "warden doctor in the image, with the pod's settings, reports a missing layer"; }
grep -q '(uid 65534)' <<<"$doctor" || die "warden doctor did not run as uid 65534: $doctor"
grep -q 'every profile can be enforced here' <<<"$doctor" || die "warden doctor: $doctor"
echo "doctor: every profile can be enforced (uid 65534, read-only root, the pod's security options)"

codex=$(in_pod run -- codex --version) || { echo "$codex" >&2; die "codex --version in the sandbox failed"; }
grep -qE '^codex-cli [0-9]' <<<"$codex" || die "codex in the sandbox said: $codex"
"$WARDEN_BIN" audit verify --audit-log "$hostdir/state/warden/audit.jsonl" >/dev/null \
  || die "the image's audit log does not verify"
grep -q '"event":"run.start"' "$hostdir/state/warden/audit.jsonl" || die "no run.start record in the image's audit log"
# Inside the sandbox /run is private and warden's state is masked: neither the key nor the audit
# log can be read there, while uid 65534 reads both outside it (the control).
for pair in 'NOT-A-REAL-KEY:/run/secrets/warden/model/api-key' '"hash":/var/lib/warden/warden/audit.jsonl'; do
  pattern=${pair%%:*} file=${pair#*:}
  in_pod_as /usr/local/bin/rg -q "$pattern" "$file" >/dev/null \
    || die "control: uid 65534 cannot read $file in the container, outside the sandbox"
  if in_pod run -- rg -q "$pattern" "$file" >/dev/null; then die "the sandbox read $file"; fi
done
echo "sandbox: $(grep -E "^codex-cli" <<<"$codex") runs in it; /run/secrets and warden's state are out of its sight; audit chain intact"

serve_smoke "$IMAGE" "$hostdir"
echo "deploy checks passed in $((SECONDS - start)) s"
