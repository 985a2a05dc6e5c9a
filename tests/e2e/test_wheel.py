"""The installed wheel, outside the checkout, runs the local cluster end to end."""

from __future__ import annotations

import subprocess
from pathlib import Path

import aiohttp
import pytest

import broadcaster
from tests.support.client import subscribe
from tests.support.cluster import fcall_publish, local_cluster

pytestmark = pytest.mark.slow


def test_the_wheel_carries_the_configs_and_pages(installed: Path, tmp_path: Path) -> None:
    probe = (
        "import broadcaster, importlib.resources as r;"
        "print(broadcaster.__file__);"
        "print(r.files('broadcaster.deploy').joinpath('nginx.conf').is_file(),"
        " r.files('broadcaster.deploy').joinpath('prometheus.yml').is_file(),"
        " r.files('broadcaster.deploy').joinpath('prometheus', 'rules.yml').is_file(),"
        " r.files('broadcaster.demo').joinpath('static', 'index.html').is_file())"
    )
    out = subprocess.run(
        [str(installed / "bin/python"), "-c", probe],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    assert out[0].startswith(str(installed / "lib")), "imported from the venv"
    assert out[1] == "True True True True"


async def test_the_installed_cluster_delivers_a_redis_cli_publish(
    installed: Path, tmp_path: Path
) -> None:
    with local_cluster(2, command=[str(installed / "bin/broadcaster")], cwd=tmp_path) as cluster:
        lb, redis = cluster["lb"][0], cluster["redis"][0]
        async with (
            aiohttp.ClientSession() as session,
            subscribe(session, lb, ["wheel"]) as sub,
        ):
            published = await fcall_publish(redis, "wheel", "hi")
            [event] = await sub.wait_for(1)
            assert (event.data, event.id) == ("hi", published)


def test_the_installed_command_names_its_release(installed: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(installed / "bin/broadcaster"), "--version"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    )
    assert done.stdout == f"broadcaster {broadcaster.__version__}\n"
    assert broadcaster.__version__ != "0+unknown"
