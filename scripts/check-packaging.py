"""What the Dockerfile, compose files and Kubernetes manifests must say for
pgboot to do its job: PID 1 in exec form, probes on /health sized for a
migration, grace periods that nest, the database URL from a Secret, the
migrate Job's failure policy following pgboot's exit codes.

Run by scripts/lint-packaging (which provides PyYAML through yamllint).
"""
import json
import re
import pathlib
import sys

import yaml

root = pathlib.Path(__file__).resolve().parent.parent
errors = []


def instructions(text):
    """(INSTRUCTION, args) pairs, continuation lines joined."""
    out, cur = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") and not cur:
            continue
        cur += line.rstrip("\\").strip() + " " if line.rstrip().endswith("\\") else line.strip()
        if not line.rstrip().endswith("\\"):
            if cur.strip():
                word, _, rest = cur.strip().partition(" ")
                out.append((word.upper(), rest.strip()))
            cur = ""
    return out


stages = {}
stage = None
for word, args in instructions((root / "Dockerfile").read_text()):
    if word == "FROM":
        stage = args.split(" AS ")[-1].strip() if " AS " in args else args
        stages[stage] = []
    stages.setdefault(stage, []).append((word, args))

for name in ("pgboot", "pipeline"):
    if name not in stages:
        errors.append(f"Dockerfile: no stage named {name}")
pipeline = dict(stages.get("pipeline", []))
for word in ("ENTRYPOINT", "CMD"):
    raw = pipeline.get(word)
    try:
        form = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        form = None
    if not isinstance(form, list):
        errors.append(f"Dockerfile pipeline: {word} must be exec form (a JSON array), so PID 1 is pgboot, not sh")
    elif word == "ENTRYPOINT" and form[:2] != ["pgboot", "--"]:
        errors.append(f"Dockerfile pipeline: ENTRYPOINT should be [\"pgboot\", \"--\"], is {form}")
if "PGBOOT_MIGRATE_CMD" not in pipeline.get("ENV", ""):
    errors.append("Dockerfile pipeline: ENV PGBOOT_MIGRATE_CMD is not set")

compose = yaml.safe_load((root / "compose" / "compose.yaml").read_text())
api = compose.get("services", {}).get("api", {})
if "DATABASE_URL" not in api.get("environment", {}):
    errors.append("compose: service api has no DATABASE_URL")
if api.get("build", {}).get("target") != "pipeline":
    errors.append("compose: service api must build the Dockerfile's pipeline stage")
if "entrypoint" in api or "command" in api and isinstance(api["command"], str):
    errors.append("compose: service api must not override pgboot's exec-form entrypoint/command with a shell string")


def seconds(text):
    """'20s', '2m', '1h30m', '30' -> seconds (the forms these files use)."""
    text = str(text)
    if text.isdigit():
        return int(text)
    parts = re.findall(r"(\d+)(h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


dockerfile = (root / "Dockerfile").read_text()
if dockerfile.lstrip().startswith("# syntax="):
    errors.append("Dockerfile: no '# syntax=' line (BuildKit would pull a frontend image)")
if "TARGETARCH" not in dockerfile:
    errors.append("Dockerfile: the musl target must follow TARGETARCH (multi-arch)")
if "FROM ${PGBOOT_BINARY} AS binary" not in dockerfile or "COPY dist/" not in dockerfile:
    errors.append("Dockerfile: PGBOOT_BINARY=dist must take a prebuilt binary from dist/")
run_pip = [a for w, a in stages.get("pipeline", []) if w == "RUN" and "pip install" in a]
if not run_pip or "--require-hashes" not in run_pip[0]:
    errors.append("Dockerfile pipeline: pip install must use --require-hashes (requirements.lock)")
if "/health" not in pipeline.get("HEALTHCHECK", ""):
    errors.append("Dockerfile pipeline: HEALTHCHECK must probe /health")
if pipeline.get("USER", "0") in ("0", "root"):
    errors.append("Dockerfile pipeline: must run as a non-root USER")
image_grace = re.search(r"PGBOOT_GRACE_PERIOD=(\w+)", pipeline.get("ENV", ""))
image_grace = seconds(image_grace.group(1)) if image_grace else None
ignored = (root / ".dockerignore").read_text().split()
if "*" not in ignored and not {"target", ".cache"} <= {i.strip("/") for i in ignored}:
    errors.append(".dockerignore: target/ and .cache/ must stay out of the build context")

deploy = api.get("deploy", {})
if deploy.get("mode") != "replicated" or deploy.get("replicas") != 3:
    errors.append("compose: api needs deploy.mode: replicated and replicas: 3 (podman-compose starts one otherwise)")
if "healthcheck" not in api or "/health" not in json.dumps(api["healthcheck"]):
    errors.append("compose: api needs a healthcheck on /health")
for port in api.get("ports", []) + compose["services"].get("postgres", {}).get("ports", []):
    if not str(port).startswith("127.0.0.1:"):
        errors.append(f"compose: port {port} must be bound to 127.0.0.1")
if image_grace and seconds(api.get("stop_grace_period", "10s")) <= image_grace:
    errors.append("compose: stop_grace_period must exceed the image's PGBOOT_GRACE_PERIOD")
dev = yaml.safe_load((root / "compose" / "compose.dev.yaml").read_text())
if not any(str(v).endswith(":/app") for v in dev["services"]["api"].get("volumes", [])):
    errors.append("compose.dev.yaml: api must bind-mount the source tree over /app (db:generate)")

# The exit codes pgboot documents (README table), and what a retry can fix.
readme = (root / "README.md").read_text()
documented = {int(c) for c in re.findall(r"^\| (\d+) \|", readme, re.M)}
FAIL_JOB, RETRY = {64, 65, 78}, {69, 75}
if not (FAIL_JOB | RETRY) <= documented:
    errors.append(f"README: exit codes {sorted((FAIL_JOB | RETRY) - documented)} are not documented")


def kube(name):
    return yaml.safe_load((root / "deploy" / "kubernetes" / name).read_text())


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def check_env(where, container):
    env = env_of(container)
    url = env.get("DATABASE_URL", {}).get("valueFrom", {}).get("secretKeyRef")
    if not url:
        errors.append(f"{where}: DATABASE_URL must come from a Secret (secretKeyRef)")
    for name, e in env.items():
        if "URL" in name and "value" in e:
            errors.append(f"{where}: {name} must not be written in the manifest")
    return env


def check_probes(where, container, budget):
    for probe in ("startupProbe", "readinessProbe"):
        p = container.get(probe)
        if not p or p.get("httpGet", {}).get("path") != "/health":
            errors.append(f"{where}: {probe} must GET /health")
    p = container.get("startupProbe", {})
    allowed = p.get("periodSeconds", 10) * p.get("failureThreshold", 3)
    if allowed < budget:
        errors.append(f"{where}: startupProbe allows {allowed}s, less than the {budget}s a boot may take")


def check_grace(where, pod, env):
    grace = seconds(env.get("PGBOOT_GRACE_PERIOD", {}).get("value", "0"))
    if not grace:
        errors.append(f"{where}: set PGBOOT_GRACE_PERIOD")
    if pod.get("terminationGracePeriodSeconds", 30) <= grace:
        errors.append(f"{where}: terminationGracePeriodSeconds must exceed PGBOOT_GRACE_PERIOD")


d = kube("deployment.yaml")
pod = d["spec"]["template"]["spec"]
c = pod["containers"][0]
if d["spec"].get("replicas") != 3:
    errors.append("deployment.yaml: 3 replicas")
if "command" in c:
    errors.append("deployment.yaml: keep the image's ENTRYPOINT (pgboot as PID 1)")
env = check_env("deployment.yaml", c)
if "PGBOOT_MIGRATE_DATABASE_URL" not in env:
    errors.append("deployment.yaml: offer PGBOOT_MIGRATE_DATABASE_URL (PgBouncer)")
# A pod may wait for Postgres, then for another pod's migration, then migrate.
budget = seconds(env["PGBOOT_WAIT_TIMEOUT"]["value"]) + seconds(env["PGBOOT_LOCK_TIMEOUT"]["value"])
check_probes("deployment.yaml", c, budget)
check_grace("deployment.yaml", pod, env)

job = kube("migrate-job.yaml")
jpod = job["spec"]["template"]["spec"]
jc = jpod["containers"][0]
if jc.get("command") != ["pgboot", "migrate"]:
    errors.append("migrate-job.yaml: the container must run pgboot migrate")
if jpod.get("restartPolicy") != "Never":
    errors.append("migrate-job.yaml: podFailurePolicy needs restartPolicy: Never")
check_env("migrate-job.yaml", jc)
actions = {}
for rule in job["spec"].get("podFailurePolicy", {}).get("rules", []):
    codes = rule.get("onExitCodes", {})
    if codes.get("operator") == "In":
        for code in codes.get("values", []):
            actions[code] = rule["action"]
if {k for k, v in actions.items() if v == "FailJob"} != FAIL_JOB:
    errors.append(f"migrate-job.yaml: exit codes {sorted(FAIL_JOB)} (usage, migration failed, configuration) must fail the Job")
if {k for k, v in actions.items() if v == "Count"} != RETRY:
    errors.append(f"migrate-job.yaml: exit codes {sorted(RETRY)} (Postgres not ready, lock) must be retried (Count)")

ic = kube("deployment-initcontainer.yaml")
ipod = ic["spec"]["template"]["spec"]
init = ipod.get("initContainers", [{}])[0]
if init.get("command") != ["pgboot", "migrate"]:
    errors.append("deployment-initcontainer.yaml: the initContainer must run pgboot migrate")
check_env("deployment-initcontainer.yaml initContainer", init)
server = ipod["containers"][0]
if server.get("command", [])[:3] != ["pgboot", "supervise", "--"]:
    errors.append("deployment-initcontainer.yaml: the server container runs under pgboot supervise")
ienv = check_env("deployment-initcontainer.yaml", server)
check_probes("deployment-initcontainer.yaml", server, 30)
check_grace("deployment-initcontainer.yaml", ipod, ienv)

for e in errors:
    print(e, file=sys.stderr)
if errors:
    sys.exit(1)
print("packaging: Dockerfile, compose/ and deploy/kubernetes/ check out")
