"""MkDocs hooks (mkdocs.yml names this file): the site's front page is the README, with its
links into docs/ made relative to the site, so the front page is written once."""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add README.md as index.md."""
    readme = Path(config.config_file_path).parent / "README.md"
    text = readme.read_text().replace("](docs/", "](")
    files.append(File.generated(config, "index.md", content=text))
    return files
