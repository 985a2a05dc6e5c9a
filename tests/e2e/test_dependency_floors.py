"""The low end of every dependency range: a venv holding each direct dependency at its
declared floor passes the type check and the unit and contract tests (their fast tier).

CI's own venv resolves the newest releases the ranges allow, so together the two runs
test both ends of every range in pyproject.toml.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
_FLOOR = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?>=([^,;]+)")


def floors() -> dict[str, str]:
    """Each direct dependency's declared floor, by normalised name."""
    declared = PROJECT["dependencies"] + [
        spec for extra in PROJECT["optional-dependencies"].values() for spec in extra
    ]
    found = {}
    for spec in declared:
        match = _FLOOR.match(spec)
        if match:
            found[_normal(match[1])] = match[2].strip()
    return found


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_dependency_is_bounded_on_both_ends() -> None:
    declared = PROJECT["dependencies"] + [
        spec
        for extra in PROJECT["optional-dependencies"].values()
        for spec in extra
        if not spec.startswith("sse-broadcaster")
    ]
    unbounded = [spec for spec in declared if ">=" not in spec or "<" not in spec]
    assert unbounded == []


@pytest.mark.timeout(900)  # an install, the type check, unit and contract: about 2 minutes
def test_the_floors_pass_the_type_check_and_the_fast_tier(tmp_path: Path) -> None:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv, "uv is missing: it comes with the test extra"
    venv = tmp_path / "floors"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["VIRTUAL_ENV"] = str(venv)

    def run(*command: str) -> str:
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, (command, done.stdout[-4000:], done.stderr[-4000:])
        return done.stdout

    run(uv, "venv", "--quiet", "--python", sys.executable, str(venv))
    run(uv, "pip", "install", "--quiet", "--resolution", "lowest-direct", "-e", ".[test]")

    # lowest-direct takes the lowest release that resolves: a floor that cannot be
    # installed any more (another floor outgrew it) would be skipped without a word.
    installed = {
        _normal(name): version
        for name, _, version in (
            line.partition("==") for line in run(uv, "pip", "freeze").splitlines()
        )
    }
    drifted = {
        name: (floor, installed.get(name))
        for name, floor in floors().items()
        if installed.get(name) != floor
    }
    assert drifted == {}, "declared floor -> installed"

    python = str(venv / "bin/python")
    run(python, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache"))
    # The unit and contract tests: every library's surface we use (aiohttp's server and
    # client, redis-py against a real redis-server, pydantic, PyJWT, orjson, the Prometheus
    # client, hypothesis...) in under a minute and a half; the integration tier on top of
    # them doubled this test's time for little more of the libraries.
    tiers = ("tests/unit", "tests/contract")
    run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", *tiers)
