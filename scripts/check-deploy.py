"""Checks what the API schemas cannot: that deploy/kubernetes fits warden, the image and itself.

    python3 scripts/check-deploy.py RENDERED.yaml SECRETS.yaml CONTAINERFILE [--self-test]

RENDERED is `kubectl kustomize deploy/kubernetes` (or the resources concatenated), SECRETS the
example Secrets, CONTAINERFILE deploy/Containerfile. Exits 1 naming every problem. With
--self-test it first breaks the manifests in each way a check guards against and fails unless
every breakage is caught, so no check here passes by construction. Needs PyYAML.
"""

import copy
import re
import sys

import yaml

LABELS = {"app.kubernetes.io/name": "warden", "app.kubernetes.io/component": "gateway"}
UID = 65534
MIN_CLIENT_KEY = 32  # warden serve: a non-loopback listen address needs a key this long
MARGIN_SECS = 10  # what the grace period must leave after the preStop sleep and the drain


def load(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def one(docs, kind, problems):
    found = [d for d in docs if d.get("kind") == kind]
    if len(found) != 1:
        problems.append(f"expected one {kind}, found {len(found)}")
        return {}
    return found[0]


def flag(args, name):
    """The value of `--name VALUE` or `--name=VALUE` in args, else None."""
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a[len(name) + 1 :]
    return None


def under(path, base):
    return path == base or path.startswith(base.rstrip("/") + "/")


def containerfile_facts(text):
    facts = {"env": {}}
    for line in re.sub(r"\\\n", " ", text).splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        op = words[0].upper()
        if op == "ENV":
            facts["env"].update(w.split("=", 1) for w in words[1:] if "=" in w)
        elif op in ("USER", "EXPOSE", "WORKDIR"):
            facts[op.lower()] = words[1]
        elif op in ("ENTRYPOINT", "CMD"):
            facts[op.lower()] = yaml.safe_load(line.split(None, 1)[1])
    return facts


def check(docs, secrets, containerfile):
    p = []
    for d in docs:
        name = f"{d.get('kind')}/{d.get('metadata', {}).get('name')}"
        if "namespace" in d.get("metadata", {}):
            p.append(f"{name}: sets a namespace; the manifests are namespace-agnostic")
        if d.get("kind") == "Secret":
            p.append(f"{name}: a Secret in the kustomization would overwrite the real keys on every apply")
    dep = one(docs, "Deployment", p)
    svc = one(docs, "Service", p)
    hpa = one(docs, "HorizontalPodAutoscaler", p)
    pdb = one(docs, "PodDisruptionBudget", p)
    sa = one(docs, "ServiceAccount", p)
    if not dep:
        return p
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    if spec.get("replicas") != 2:
        p.append(f"Deployment: replicas {spec.get('replicas')}, expected 2")
    if spec["selector"].get("matchLabels") != LABELS or any(labels.get(k) != v for k, v in LABELS.items()):
        p.append("Deployment: selector and pod labels must both be " + repr(LABELS))
    if svc.get("spec", {}).get("selector") != LABELS:
        p.append("Service: selector does not select the Deployment's pods")
    if pdb.get("spec", {}).get("selector", {}).get("matchLabels") != LABELS:
        p.append("PodDisruptionBudget: selector does not select the Deployment's pods")
    if pdb.get("spec", {}).get("maxUnavailable") != 1:
        p.append("PodDisruptionBudget: maxUnavailable must be 1 (one replica drains at a time)")
    ref = hpa.get("spec", {}).get("scaleTargetRef", {})
    if (ref.get("kind"), ref.get("name")) != ("Deployment", dep["metadata"]["name"]):
        p.append("HorizontalPodAutoscaler: scaleTargetRef does not name the Deployment")
    if hpa.get("spec", {}).get("minReplicas", 1) < 2:
        p.append("HorizontalPodAutoscaler: minReplicas below 2 leaves nothing to drain to")
    if not any(m.get("resource", {}).get("name") == "cpu" for m in hpa.get("spec", {}).get("metrics", [])):
        p.append("HorizontalPodAutoscaler: no CPU metric")

    # The sandbox: what docs/containers.md says a pod needs for every layer.
    if pod.get("hostUsers") is not False:
        p.append("pod: hostUsers must be false (a user namespace of the pod's own)")
    if pod.get("automountServiceAccountToken") is not False or sa.get("automountServiceAccountToken") is not False:
        p.append("pod and ServiceAccount: automountServiceAccountToken must be false (workers could read the token)")
    if pod.get("serviceAccountName") != sa.get("metadata", {}).get("name"):
        p.append("pod: serviceAccountName does not name the ServiceAccount")
    containers = pod.get("containers", [])
    if len(containers) != 1:
        p.append(f"pod: {len(containers)} containers, expected one")
        return p
    c = containers[0]
    psc, sc = pod.get("securityContext", {}), c.get("securityContext", {})

    def eff(key):
        return sc.get(key, psc.get(key))

    want = {
        "procMount": "Unmasked",
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
    }
    for key, value in want.items():
        if eff(key) != value:
            p.append(f"container: securityContext.{key} is {eff(key)!r}, expected {value!r}")
    for key in ("seccompProfile", "appArmorProfile"):
        if (eff(key) or {}).get("type") != "Unconfined":
            p.append(f"container: {key}.type must be Unconfined (warden installs its own filter)")
    if sc.get("privileged"):
        p.append("container: privileged must not be set")
    if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
        p.append("container: capabilities must drop ALL and add none")

    # The entrypoint's arguments.
    args = c.get("args", [])
    listen = flag(args, "--listen") or ""
    host, _, port = listen.rpartition(":")
    if host in ("", "127.0.0.1", "localhost", "[::1]"):
        p.append(f"container: --listen {listen!r} must bind a non-loopback address")
    ports = {cp.get("name"): cp.get("containerPort") for cp in c.get("ports", [])}
    if not port.isdigit() or ports.get("http") != int(port):
        p.append(f"container: port 'http' {ports.get('http')} is not the --listen port {port!r}")
    svc_ports = svc.get("spec", {}).get("ports", [])
    if [(sp.get("port"), sp.get("targetPort")) for sp in svc_ports] != [(ports.get("http"), "http")]:
        p.append("Service: must expose the container port 'http' on the same port number")
    if flag(args, "--audit-log") != "-":
        p.append("container: --audit-log must be '-' (hash-chained JSONL on stdout for log shippers)")
    if "--no-auth" in args:
        p.append("container: --no-auth serves anyone who reaches the port")

    # Probes and drain.
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz"), ("startupProbe", "/livez")):
        get = c.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in ("http", ports.get("http")):
            p.append(f"container: {probe} must GET {path} on port http")
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    grace_ms = env.get("WORKER_SHUTDOWN_GRACE_MS")
    sleep = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    if "exec" in c.get("lifecycle", {}).get("preStop", {}):
        p.append("container: a preStop exec cannot run: the image has no shell")
    if grace_ms is None or not grace_ms.isdigit():
        p.append("container: WORKER_SHUTDOWN_GRACE_MS must be set (milliseconds)")
    else:
        need = sleep + int(grace_ms) / 1000 + MARGIN_SECS
        if pod.get("terminationGracePeriodSeconds", 30) < need:
            p.append(
                f"pod: terminationGracePeriodSeconds {pod.get('terminationGracePeriodSeconds', 30)} < "
                f"preStop {sleep} s + drain {int(grace_ms) / 1000} s + {MARGIN_SECS} s"
            )
    if "cpu" not in c.get("resources", {}).get("requests", {}):
        p.append("container: no CPU request: the HorizontalPodAutoscaler has nothing to measure against")

    # Writable places on a read-only root, and where the secrets are.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}

    def volume_at(path):
        best = max((m for m in mounts if under(path, m)), key=len, default=None)
        return (mounts[best], volumes.get(mounts[best]["name"], {})) if best else (None, {})

    for var in ("XDG_STATE_HOME", "TMPDIR", "HOME"):
        m, v = volume_at(env.get(var) or "/nonexistent")
        if "emptyDir" not in v or m.get("readOnly"):
            p.append(f"container: {var}={env.get(var)!r} is not on a writable emptyDir (the root is read-only)")
    state, tmp = env.get("XDG_STATE_HOME") or "", env.get("TMPDIR") or ""
    if state and tmp and (under(state, tmp) or volume_at(state)[0] is volume_at(tmp)[0]):
        p.append("container: XDG_STATE_HOME must not be on TMPDIR's volume (Codex refuses homes under TMPDIR)")
    if env.get("CODEX_BIN") != containerfile["env"].get("CODEX_BIN"):
        p.append("container: CODEX_BIN differs from the image's")
    for var in ("XDG_STATE_HOME", "TMPDIR", "HOME"):
        if env.get(var) != containerfile["env"].get(var):
            p.append(f"container: {var} differs from the image's ({containerfile['env'].get(var)!r})")

    example = {s["metadata"]["name"]: s for s in secrets if s.get("kind") == "Secret"}
    for opt in ("--credential-file", "--api-key-file"):
        path = flag(args, opt) or ""
        m, v = volume_at(path)
        secret = v.get("secret", {})
        items = {i["path"]: i["key"] for i in secret.get("items", [])}
        rel = path[len(m["mountPath"]) :].lstrip("/") if m else ""
        if not secret or not m.get("readOnly"):
            p.append(f"container: {opt} {path!r} is not in a read-only Secret volume")
        elif rel not in items:
            p.append(f"container: {opt} {path!r}: the Secret volume has no item at {rel!r}")
        elif items[rel] not in example.get(secret.get("secretName"), {}).get("stringData", {}):
            p.append(f"secrets.example.yaml: no Secret {secret.get('secretName')} with key {items[rel]}")
        if not under(path, "/run"):
            p.append(f"container: {opt} {path!r} should be below /run, which is private inside the sandbox")
    for line in example.get("warden-client-keys", {}).get("stringData", {}).get("keys", "").splitlines():
        key = line.partition(":")[2]
        if "CHANGE-ME" not in key or len(key) >= MIN_CLIENT_KEY:
            p.append("secrets.example.yaml: a client key placeholder must say CHANGE-ME and be too short to serve")
    if not all("CHANGE-ME" in v for s in example.values() for v in s.get("stringData", {}).values()):
        p.append("secrets.example.yaml: every value must be a marked placeholder (CHANGE-ME)")

    # The image.
    image = c.get("image", "")
    if not image.startswith("localhost/warden"):
        p.append(f"container: image {image!r} is not deploy/build-image.sh's (kustomize `images:` renames it)")
    if containerfile.get("user") != f"{UID}:{UID}":
        p.append(f"Containerfile: USER {containerfile.get('user')} is not {UID}:{UID}")
    if containerfile.get("expose") != port:
        p.append(f"Containerfile: EXPOSE {containerfile.get('expose')} is not the --listen port {port}")
    workdir = c.get("workingDir", containerfile.get("workdir") or "/")
    if any(under(workdir, env.get(var) or "/nonexistent") for var in ("XDG_STATE_HOME", "HOME")):
        p.append(f"image: the working directory {workdir} (the workers' workdir) lies in warden's state")
    if containerfile.get("entrypoint") != ["/warden", "serve"]:
        p.append("Containerfile: ENTRYPOINT must be /warden serve (the Deployment passes only arguments)")
    cmd = containerfile.get("cmd") or []
    if flag(cmd, "--audit-log") != "-" or not (flag(cmd, "--listen") or "").startswith("0.0.0.0:"):
        p.append("Containerfile: CMD must listen on 0.0.0.0 and audit to stdout")
    return p


def mutations():
    """(what breaks, how): each must make check() report a problem."""

    def pod(d):
        return d["spec"]["template"]["spec"]

    def ctr(d):
        return pod(d)["containers"][0]

    def env(d, name, value):
        for e in ctr(d)["env"]:
            if e["name"] == name:
                e["value"] = value

    def arg(d, name, value):
        a = ctr(d)["args"]
        a[a.index(name) + 1] = value

    return [
        ("hostUsers dropped", lambda d: pod(d).pop("hostUsers")),
        ("procMount Default", lambda d: ctr(d)["securityContext"].update(procMount="Default")),
        ("seccomp RuntimeDefault", lambda d: ctr(d)["securityContext"].update(seccompProfile={"type": "RuntimeDefault"})),
        ("root filesystem writable", lambda d: ctr(d)["securityContext"].update(readOnlyRootFilesystem=False)),
        ("runs as root", lambda d: ctr(d)["securityContext"].update(runAsUser=0)),
        ("escalation allowed", lambda d: ctr(d)["securityContext"].update(allowPrivilegeEscalation=True)),
        ("a capability added", lambda d: ctr(d)["securityContext"]["capabilities"].update(add=["SYS_ADMIN"])),
        ("token mounted", lambda d: pod(d).update(automountServiceAccountToken=True)),
        ("readiness on /healthz", lambda d: ctr(d)["readinessProbe"]["httpGet"].update(path="/healthz")),
        ("liveness on another port", lambda d: ctr(d)["livenessProbe"]["httpGet"].update(port=8080)),
        ("grace shorter than the drain", lambda d: pod(d).update(terminationGracePeriodSeconds=20)),
        ("drain not configured", lambda d: env(d, "WORKER_SHUTDOWN_GRACE_MS", None)),
        ("preStop exec", lambda d: ctr(d)["lifecycle"].update(preStop={"exec": {"command": ["sleep", "5"]}})),
        ("loopback listen", lambda d: arg(d, "--listen", "127.0.0.1:11435")),
        ("listen port moved", lambda d: arg(d, "--listen", "0.0.0.0:8080")),
        ("audit to a file", lambda d: arg(d, "--audit-log", "/var/lib/warden/audit.jsonl")),
        ("no auth", lambda d: ctr(d)["args"].append("--no-auth")),
        ("model key path off its mount", lambda d: arg(d, "--credential-file", "/run/secrets/warden/model/key")),
        ("client keys outside a Secret", lambda d: arg(d, "--api-key-file", "/var/lib/warden/keys")),
        ("state under TMPDIR", lambda d: env(d, "XDG_STATE_HOME", "/tmp/warden")),
        ("TMPDIR on the root", lambda d: env(d, "TMPDIR", "/scratch")),
        ("secret mount writable", lambda d: ctr(d)["volumeMounts"][2].update(readOnly=False)),
        ("namespace pinned", lambda d: d["metadata"].update(namespace="default")),
        ("pod labels changed", lambda d: d["spec"]["template"]["metadata"]["labels"].update({"app.kubernetes.io/name": "x"})),
        ("no CPU request", lambda d: ctr(d)["resources"]["requests"].pop("cpu")),
        ("another image", lambda d: ctr(d).update(image="docker.io/library/busybox")),
    ]


def self_test(docs, secrets, containerfile):
    """The breakages check() missed, and how many were tried."""
    missed, tried = [], 0
    for what, breaks in mutations():
        tried += 1
        broken = copy.deepcopy(docs)
        breaks(next(d for d in broken if d.get("kind") == "Deployment"))
        if not check(broken, secrets, containerfile):
            missed.append(what)
    others = [
        ("a Secret in the kustomization", lambda ds, ss: ds.append(copy.deepcopy(ss[0]))),
        ("a usable client key in the example", lambda ds, ss: ss[1]["stringData"].update(keys="a:" + "k" * 40 + "\n")),
        ("the PDB lets both go", lambda ds, ss: next(d for d in ds if d["kind"] == "PodDisruptionBudget")["spec"].update(maxUnavailable=2)),
        ("the HPA aims elsewhere", lambda ds, ss: next(d for d in ds if d["kind"] == "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"].update(name="x")),
        ("the Service on another port", lambda ds, ss: next(d for d in ds if d["kind"] == "Service")["spec"]["ports"][0].update(port=80)),
    ]
    for what, breaks in others:
        tried += 1
        ds, ss = copy.deepcopy(docs), copy.deepcopy(secrets)
        breaks(ds, ss)
        if not check(ds, ss, containerfile):
            missed.append(what)
    for what, cf in (
        ("image USER root", dict(containerfile, user="0:0")),
        ("image EXPOSE 80", dict(containerfile, expose="80")),
        ("image WORKDIR in the state", dict(containerfile, workdir="/var/lib/warden")),
    ):
        tried += 1
        if not check(docs, secrets, cf):
            missed.append(what)
    return missed, tried


def main(argv):
    if len(argv) not in (3, 4) or (len(argv) == 4 and argv[3] != "--self-test"):
        sys.exit(__doc__)
    docs, secrets = load(argv[0]), load(argv[1])
    with open(argv[2], encoding="utf-8") as f:
        containerfile = containerfile_facts(f.read())
    problems = check(docs, secrets, containerfile)
    for problem in problems:
        print(f"check-deploy: {problem}", file=sys.stderr)
    if problems:
        return 1
    if len(argv) == 4:
        missed, tried = self_test(docs, secrets, containerfile)
        for what in missed:
            print(f"check-deploy: self-test: breaking it ({what}) went unnoticed", file=sys.stderr)
        if missed:
            return 1
        print(f"consistency: ok (and each of {tried} deliberate breakages is caught)")
    else:
        print("consistency: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
