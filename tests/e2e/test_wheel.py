"""The installed wheel, outside the checkout, runs the local cluster end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support.client import subscribe
from tests.support.cluster import fcall_publish, local_cluster

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel built from this checkout; returns its bin/."""
    where = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(where), str(ROOT)],
        check=True,
        cwd=where,
    )
    wheel = next(where.glob("sse_broadcaster-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(where / "venv")], check=True)
    subprocess.run(
        [str(where / "venv/bin/pip"), "install", "-q", str(wheel)], check=True, cwd=where
    )
    return where / "venv/bin"


def test_the_wheel_carries_the_configs_and_pages(installed: Path, tmp_path: Path) -> None:
    probe = (
        "import broadcaster, importlib.resources as r;"
        "print(broadcaster.__file__);"
        "print(r.files('broadcaster.deploy').joinpath('nginx.conf').is_file(),"
        " r.files('broadcaster.deploy').joinpath('prometheus.yml').is_file(),"
        " r.files('broadcaster.demo').joinpath('static', 'index.html').is_file())"
    )
    out = subprocess.run(
        [str(installed / "python"), "-c", probe],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    assert out[0].startswith(str(installed.parent / "lib")), "imported from the venv"
    assert out[1] == "True True True"


async def test_the_installed_cluster_delivers_a_redis_cli_publish(
    installed: Path, tmp_path: Path
) -> None:
    with local_cluster(2, command=[str(installed / "broadcaster")], cwd=tmp_path) as cluster:
        lb, redis = cluster["lb"][0], cluster["redis"][0]
        async with (
            aiohttp.ClientSession() as session,
            subscribe(session, lb, ["wheel"]) as sub,
        ):
            published = await fcall_publish(redis, "wheel", "hi")
            [event] = await sub.wait_for(1)
            assert (event.data, event.id) == ("hi", published)
