"""The settings reference: docs/settings.md's table, made from the `Settings` fields (their
descriptions and defaults) and the `serve` flags, the same text `broadcaster serve --help`
shows. A unit test fails when the page's table differs from what this makes; to rewrite it:

    python -m broadcaster.cli.settings_reference docs/settings.md

With no argument it prints the table.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from broadcaster.cli.options import SERVE_FLAGS, shown_default
from broadcaster.node.settings import setting_name
from broadcaster.settings import Settings

BEGIN = (
    "<!-- The table below is made from the Settings fields (broadcaster/node/settings.py,"
    " broadcaster/demo/settings.py):"
    " edit their descriptions, then run"
    " `python -m broadcaster.cli.settings_reference docs/settings.md`. -->"
)
END = "<!-- End of the made table. -->"


def _code(text: str) -> str:
    return f"`{text}`"


def table() -> str:
    """The Markdown table of every setting: variable, flag, default, meaning."""
    rows = ["| variable | flag | default | meaning |", "|---|---|---|---|"]
    for field, info in Settings.model_fields.items():
        flag = _code("--" + field.replace("_", "-")) if field in SERVE_FLAGS else "none"
        meaning = (info.description or "").replace("|", "\\|")
        default = shown_default(field, _code)
        rows.append(f"| {_code(setting_name(field))} | {flag} | {default} | {meaning} |")
    return "\n".join(rows) + "\n"


def with_table(page: str) -> str:
    """`page` with the text between its BEGIN and END lines replaced by the table."""
    before, begin, rest = page.partition(BEGIN)
    _, end, after = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"the page has no region from {BEGIN!r} to {END!r}")
    return f"{before}{BEGIN}\n\n{table()}\n{END}{after}"


def main(argv: Sequence[str]) -> None:
    """Rewrite the table in the page named by `argv`, or print it."""
    if not argv:
        sys.stdout.write(table())
        return
    page = Path(argv[0])
    page.write_text(with_table(page.read_text()))


if __name__ == "__main__":
    main(sys.argv[1:])
