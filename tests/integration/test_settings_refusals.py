"""A node started with a bad setting refuses with one line naming it (a real process)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"BROADCASTER_PORT": "99999"}, "BROADCASTER_PORT (--port)"),
        ({"BROADCASTER_HEARTBEAT_INTERVAL": "soon"}, "BROADCASTER_HEARTBEAT_INTERVAL"),
        ({"BROADCASTER_REDIS_URL": "localhost:6379"}, "BROADCASTER_REDIS_URL (--redis-url)"),
        ({"BROADCASTER_RETRY_MS": "-1"}, "BROADCASTER_RETRY_MS"),
        # Set but empty turned authentication off without a word (an unset ${VAR}).
        ({"BROADCASTER_JWT_SECRET": ""}, "BROADCASTER_JWT_SECRET: is set but empty"),
        ({"BROADCASTER_JWT_SECRET": "  "}, "BROADCASTER_JWT_SECRET: is set but empty"),
        ({"BROADCASTER_PUBLISH_TOKEN": ""}, "BROADCASTER_PUBLISH_TOKEN: is set but empty"),
        ({"BROADCASTER_PUBLISH_TOKEN": "two words"}, "BROADCASTER_PUBLISH_TOKEN: may contain"),
        ({"BROADCASTER_JWT_PUBLIC_KEY": ""}, "BROADCASTER_JWT_PUBLIC_KEY (--jwt-public-key): is"),
        (
            {"BROADCASTER_JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\nbroken\n"},
            "BROADCASTER_JWT_PUBLIC_KEY (--jwt-public-key): is not a PEM public key",
        ),
        (
            {"BROADCASTER_JWT_PUBLIC_KEY": "@/nonexistent/key.pem"},
            "BROADCASTER_JWT_PUBLIC_KEY (--jwt-public-key): cannot read /nonexistent/key.pem",
        ),
    ],
)
def test_invalid_value_exits_with_one_line_naming_it(env: dict[str, str], named: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "broadcaster", "serve"],
        check=False,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"broadcaster: invalid {named}"), lines[0]
