#!/usr/bin/env python3
"""Checks the container recipe without a container engine (none runs in CI).

- Containerfile: parsed by dockerfile-parse (the parser of the atomic/OSBS build tools); every
  stage named, `COPY --from` only from earlier stages, every local COPY source in the repository,
  the run-time stages without RUN (no shell there), with a non-root USER and exec-form
  ENTRYPOINT/CMD, `cargo build --locked` in the build stage; .dockerignore keeps target/ out.
- compose.yaml: parsed by PyYAML; each build target is a stage of the Containerfile, every
  mounted file and secret file exists, every service's network namespace is the database's,
  the entrypoints are binaries the target stage installs.
- The compose hexidian.toml: `hexidian check-config --offline` reads it with the demo secrets
  (paths inside the container mapped to the repository).

Usage: packaging/check-container.py [HEXIDIAN_BINARY]   (default: cargo run -p hexidian)
"""

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from dockerfile_parse import DockerfileParser
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONTAINER = ROOT / "packaging" / "container"
problems = []


def problem(msg):
    problems.append(msg)
    print(f"  PROBLEM: {msg}")


def words(value):
    """Instruction arguments: exec form (JSON array) or shell form."""
    import json

    value = value.strip()
    if value.startswith("["):
        try:
            return json.loads(value), True
        except json.JSONDecodeError as e:
            problem(f"exec form that is not JSON: {value} ({e})")
            return [], True
    return shlex.split(value), False


def check_containerfile():
    path = ROOT / "Containerfile"
    print(f"-- {path.relative_to(ROOT)}")
    with open(path, "rb") as f:
        parser = DockerfileParser(fileobj=f)
        structure = parser.structure
    stages = []  # (name, [instructions])
    for ins in structure:
        cmd = ins["instruction"]
        if cmd == "FROM":
            parts = ins["value"].split()
            if len(parts) != 3 or parts[1].upper() != "AS":
                problem(f"line {ins['startline'] + 1}: stage without a name: FROM {ins['value']}")
                name = f"#{len(stages)}"
            else:
                name = parts[2]
            stages.append((name, parts[0], []))
        elif not stages:
            if cmd not in ("ARG", "COMMENT"):
                problem(f"{cmd} before the first FROM")
        else:
            stages[-1][2].append(ins)
    names = [s[0] for s in stages]
    print(f"  stages: {', '.join(f'{n} ({base})' for n, base, _ in stages)}")
    if len(set(names)) != len(names):
        problem(f"stage names repeat: {names}")
    for required in ("build", "hexidian", "simulators"):
        if required not in names:
            problem(f"no stage {required!r}")
    for i, (name, base, body) in enumerate(stages):
        runtime = name != "build"
        users = [ins["value"].strip() for ins in body if ins["instruction"] == "USER"]
        for ins in body:
            cmd, value = ins["instruction"], ins["value"]
            line = ins["startline"] + 1
            if cmd == "COPY":
                args, _ = words(value)
                flags = [a for a in args if a.startswith("--")]
                paths = [a for a in args if not a.startswith("--")]
                sources = paths[:-1]
                src_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
                if src_stage is not None:
                    if src_stage not in names[:i]:
                        problem(f"line {line}: COPY --from={src_stage}, not an earlier stage")
                else:
                    for s in sources:
                        if s != "." and not (ROOT / s).exists():
                            problem(f"line {line}: COPY source {s} is not in the repository")
            if runtime and cmd == "RUN":
                problem(f"line {line}: RUN in run-time stage {name} (it has no shell)")
            if runtime and cmd in ("ENTRYPOINT", "CMD"):
                _, exec_form = words(value)
                if not exec_form:
                    problem(f"line {line}: {cmd} in shell form needs a shell: use a JSON array")
            if not runtime and cmd == "RUN" and "cargo build" in value and "--locked" not in value:
                problem(f"line {line}: cargo build without --locked")
        if runtime:
            if not users or users[-1] in ("root", "0", "0:0"):
                problem(f"stage {name}: runs as root (add USER nonroot)")
            if not any(ins["instruction"] == "ENTRYPOINT" for ins in body):
                problem(f"stage {name}: no ENTRYPOINT")
    ignore = (ROOT / ".dockerignore").read_text().split()
    for must in ("target", ".git"):
        if must not in ignore:
            problem(f".dockerignore does not keep {must} out of the build context")
    return {n: body for n, _, body in stages}


def installed_binaries(body):
    out = set()
    for ins in body:
        if ins["instruction"] == "COPY":
            args, _ = words(ins["value"])
            paths = [a for a in args if not a.startswith("--")]
            dest = paths[-1]
            for s in paths[:-1]:
                out.add(dest + Path(s).name if dest.endswith("/") else dest)
    return out


def check_compose(stages):
    path = CONTAINER / "compose.yaml"
    print(f"-- {path.relative_to(ROOT)}")
    doc = yaml.safe_load(path.read_text())
    services = doc.get("services") or {}
    print(f"  services: {', '.join(services)}")
    for want in ("db", "guru3", "omm", "hexidian"):
        if want not in services:
            problem(f"no service {want!r}")
    secrets = doc.get("secrets") or {}
    for name, spec in secrets.items():
        if not (CONTAINER / spec["file"]).is_file():
            problem(f"secret {name}: {spec['file']} does not exist")
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            if (CONTAINER / build["context"] / build["dockerfile"]).resolve() != ROOT / "Containerfile":
                problem(f"service {name}: builds from another file than the Containerfile")
            target = build.get("target")
            if target not in stages:
                problem(f"service {name}: target {target!r} is not a stage")
            entry = svc.get("entrypoint")
            if entry and entry[0] not in installed_binaries(stages.get(target, [])):
                problem(f"service {name}: entrypoint {entry[0]} is not installed by stage {target}")
        if name != "db" and svc.get("network_mode") != "service:db":
            problem(f"service {name}: not in the database's network namespace")
        for vol in svc.get("volumes") or []:
            src = vol.split(":", 1)[0]
            if src.startswith(".") and not (CONTAINER / src).exists():
                problem(f"service {name}: mounts {src}, which does not exist")
        for s in svc.get("secrets") or []:
            if s not in secrets:
                problem(f"service {name}: secret {s} is not declared")
        for dep in svc.get("depends_on") or {}:
            if dep not in services:
                problem(f"service {name}: depends on unknown {dep}")


def check_config(binary):
    path = CONTAINER / "hexidian.toml"
    print(f"-- {path.relative_to(ROOT)}: hexidian check-config --offline")
    text = path.read_text().replace(
        "/usr/share/hexidian/fixtures/tls/ca.pem", str(ROOT / "fixtures/tls/ca.pem")
    )
    pin = (ROOT / "fixtures/tls/server.sha256").read_text().strip()
    if pin not in text:
        problem("the OMM fingerprint is not the simulator's (fixtures/tls/server.sha256)")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "hexidian.toml"
        cfg.write_text(text)
        env = dict(os.environ, CREDENTIALS_DIRECTORY=str(CONTAINER / "demo-secrets"))
        cmd = binary + ["check-config", "--offline", "--config", str(cfg)]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        print("  " + (r.stderr.strip() or r.stdout.strip()).replace("\n", "\n  "))
        if r.returncode != 0:
            problem("check-config --offline refused the compose config")


def main():
    binary = sys.argv[1:] or ["cargo", "run", "-q", "--locked", "-p", "hexidian", "--"]
    stages = check_containerfile()
    check_compose(stages)
    check_config(binary)
    if problems:
        print(f"container recipe: {len(problems)} problem(s)")
        sys.exit(1)
    print("container recipe: ok")


if __name__ == "__main__":
    main()
