"""The Dockerfile's invariants, checked without a Docker engine: a multi-stage build whose final
stage runs as the numeric non-root user the chart and the phase Jobs assume, with the two
console scripts of pyproject.toml as its programs, and a build context of only what it copies."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from chart_support import CHART, REPO

from datamigration.core import jobs

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


@dataclass
class Stage:
    base: str
    name: str = ""
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        values = [v for k, v in self.instructions if k == keyword]
        return values[-1] if values else None


def stages() -> list[Stage]:
    """The Dockerfile's stages, each with its instructions (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            base, _, name = re.sub(r"\s+AS\s+", " AS ", rest, flags=re.I).partition(" AS ")
            result.append(Stage(base=base.strip(), name=name.strip()))
        elif result:
            result[-1].instructions.append((keyword, rest.strip()))
    return result


def console_scripts() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    scripts: dict[str, str] = project["scripts"]
    return scripts


def test_multi_stage_with_a_shell_free_runtime() -> None:
    build, runtime = stages()[0], stages()[-1]
    assert len(stages()) >= 2
    assert build.name, "the build stage is named, for COPY --from"
    assert any(
        k == "COPY" and v.startswith(f"--from={build.name} ") for k, v in runtime.instructions
    )
    assert not [v for k, v in runtime.instructions if k == "RUN"], "the runtime has no shell"
    assert "wheel" in " ".join(v for k, v in build.instructions if k == "RUN")


def test_runs_as_the_numeric_non_root_user_of_the_chart_and_the_jobs() -> None:
    user = stages()[-1].last("USER")
    assert user is not None and re.fullmatch(r"\d+(:\d+)?", user), f"USER {user} is not numeric"
    uid, _, gid = user.partition(":")
    assert int(uid) != 0 and int(gid or uid) != 0
    assert int(uid) == jobs.RUNNER_UID, "core/jobs.py runs phase Jobs as this user"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)


def test_programs_are_console_scripts() -> None:
    runtime = stages()[-1]
    assert runtime.last("ENTRYPOINT") == "[]", "the base image's python entrypoint is cleared"
    cmd = json.loads(runtime.last("CMD") or "null")
    assert cmd == ["datamigration-operator"], "exec form, the operator by default"
    scripts = console_scripts()
    for program in ("datamigration-operator", "datamigration-runner"):
        assert program in scripts, f"{program} is not a console script in pyproject.toml"
        module = scripts[program].partition(":")[0]
        assert importlib.util.find_spec(module) is not None, f"{module} does not exist"
        assert module in DOCKERFILE.read_text(), "the build stage imports it as a smoke test"
    assert '"command": ["datamigration-runner"]' in Path(jobs.__file__).read_text()


def test_build_context_holds_exactly_what_is_copied() -> None:
    rules = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", ".dockerignore is an allowlist"

    def included(path: str) -> bool:
        keep = True
        for rule in rules:
            negate = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
                keep = negate
        return keep

    copied = [
        source
        for stage in stages()
        for keyword, value in stage.instructions
        if keyword == "COPY" and not value.startswith("--from")
        for source in value.split()[:-1]
    ]
    assert copied
    for source in copied:
        assert included(source.rstrip("/")), f"COPY {source} but .dockerignore excludes it"
    for private in (".venv", ".git", ".local-cluster", "tests", "charts"):
        assert not included(private), f"{private} would be sent to the Docker daemon"
