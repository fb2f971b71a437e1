"""What the Dockerfile and compose file must say for pgboot to do its job.

Run by scripts/lint-packaging (which provides PyYAML through yamllint).
"""
import json
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

for e in errors:
    print(e, file=sys.stderr)
if errors:
    sys.exit(1)
print("packaging: Dockerfile and compose/compose.yaml check out")
