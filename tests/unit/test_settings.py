"""Settings from the environment and flags, and the one-line refusal of bad values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from broadcaster.cli import load_settings
from broadcaster.node.settings import cpu_count, unknown_variables
from broadcaster.settings import Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert settings.redis_url is None
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)
    assert settings.heartbeat_interval == 15.0
    assert settings.channel_prefix == "sse:"
    assert settings.node_id.endswith(":8080")
    assert settings.publish_token is None


def test_environment_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROADCASTER_PORT", "9000")
    monkeypatch.setenv("BROADCASTER_REDIS_URL", "redis://localhost:6379/0")
    monkeypatch.setenv("BROADCASTER_PUBLISH_TOKEN", "t")
    settings = load_settings(port=9100, heartbeat_interval=None)
    assert settings.port == 9100
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.publish_token is not None
    assert settings.publish_token.get_secret_value() == "t"


def test_empty_redis_url_means_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROADCASTER_REDIS_URL", "")
    assert Settings().redis_url is None


def test_invalid_flag_value_is_named_too() -> None:
    with pytest.raises(SystemExit, match=r"invalid BROADCASTER_PORT \(--port\)"):
        load_settings(port=0)


def test_workers_auto_is_one_per_usable_cpu() -> None:
    settings = Settings(workers="auto", redis_url="redis://localhost:6379")
    assert settings.workers == cpu_count() <= len(os.sched_getaffinity(0))
    assert Settings().workers == 1


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "200000 100000\n"}, 2),  # cgroup v2, a CPU limit of 2
        ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs: rounded up
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu.max": "max 100000\n"}, None),  # no limit: the affinity
        ({"cpu/cpu.cfs_quota_us": "300000", "cpu/cpu.cfs_period_us": "100000"}, 3),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
        ({}, None),
    ],
)
def test_workers_auto_is_bounded_by_the_cgroup_cpu_quota(
    tmp_path: Path, files: dict[str, str], expected: int | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    affinity = len(os.sched_getaffinity(0))
    assert cpu_count(tmp_path) == (affinity if expected is None else min(affinity, expected))


@pytest.mark.parametrize("workers", ["0", "many"])
def test_workers_must_be_a_positive_number_or_auto(workers: str) -> None:
    with pytest.raises(SystemExit, match=r"invalid BROADCASTER_WORKERS \(--workers\)"):
        load_settings(workers=workers, redis_url="redis://localhost:6379")


def test_unknown_variables_are_named_with_the_closest_setting() -> None:
    environ = {
        "BROADCASTER_MAX_CONECTIONS": "5",
        "BROADCASTER_PORT": "1",
        "BROADCASTER_TOKEN": "t",
        "BROADCASTER_URL": "http://x",
        "BROADCASTER_PUBLIC_URL": "http://y",
        "BROADCASTER_ZZZ": "1",
        "PATH": "/bin",
    }
    assert unknown_variables(environ, Settings) == [
        "BROADCASTER_MAX_CONECTIONS is not a setting (did you mean "
        "BROADCASTER_MAX_CONNECTIONS?); it is ignored",
        "BROADCASTER_ZZZ is not a setting; it is ignored",
    ]
