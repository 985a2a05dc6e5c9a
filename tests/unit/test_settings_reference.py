"""The settings reference and `serve --help` are made from the `Settings` fields: the
committed page matches what they make, and every flag's help shows its default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from broadcaster.cli import parser
from broadcaster.cli.options import SERVE_FLAGS, plain, shown_default
from broadcaster.cli.settings_reference import BEGIN, END, table, with_table
from broadcaster.node.settings import setting_name
from broadcaster.settings import Settings

PAGE = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def test_the_page_holds_the_table_the_settings_make() -> None:
    page = PAGE.read_text()
    assert page.count(BEGIN) == 1 and page.count(END) == 1
    assert page == with_table(page), (
        "docs/settings.md is out of date: run "
        "`.venv/bin/python -m broadcaster.cli.settings_reference docs/settings.md`"
    )


def test_every_setting_has_a_row_and_a_description() -> None:
    rows = [line for line in table().splitlines() if line.startswith("| `BROADCASTER_")]
    assert [re.match(r"\| `(\w+)`", row)[1] for row in rows] == [  # type: ignore[index]
        setting_name(field) for field in Settings.model_fields
    ]
    for field, info in Settings.model_fields.items():
        assert info.description and info.description.endswith("."), field


def test_every_flag_is_a_setting_and_the_secrets_are_not_flags() -> None:
    assert set(SERVE_FLAGS) <= set(Settings.model_fields)
    assert set(Settings.model_fields) - set(SERVE_FLAGS) == {"publish_token", "jwt_secret"}


@pytest.mark.parametrize(
    ("field", "shown"),
    [
        ("redis_url", "unset"),
        ("host", "0.0.0.0"),
        ("heartbeat_interval", "15"),  # as it is written in the environment, not 15.0
        ("demo_token_delay", "0.05"),
        ("node_id", "<hostname>:<port>"),
        ("trusted_proxies", "empty"),
        ("max_connections_per_ip", "0 (off)"),
        ("publish_replicas", "0"),
    ],
)
def test_defaults_are_shown_as_users_write_them(field: str, shown: str) -> None:
    assert shown_default(field) == shown


def test_serve_help_shows_each_flag_with_its_description_and_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parser().parse_args(["serve", "--help"])
    assert exit_.value.code == 0
    # argparse wraps the help, breaking long words too: compare without any whitespace.
    shown = "".join(capsys.readouterr().out.split())
    for field in SERVE_FLAGS:
        description = plain(Settings.model_fields[field].description or "")
        flag = f"--{field.replace('_', '-')} {field.upper()} "
        text = f"{flag}{description} (default: {shown_default(field)})"
        assert "".join(text.split()) in shown, field


def test_help_reads_links_as_their_text_and_page() -> None:
    assert (
        plain("See [Every core](workers.md), `auto`.") == "See Every core (docs/workers.md), auto."
    )
