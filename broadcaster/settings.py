"""`Settings`: every setting of `broadcaster serve`, the node's and its parts'."""

from __future__ import annotations

from broadcaster.demo.settings import DemoSettings
from broadcaster.node.settings import NodeSettings


class Settings(DemoSettings, NodeSettings):
    """Every setting of a node as `broadcaster serve` runs it: the node's own
    (`NodeSettings`) and the demo's (`DemoSettings`), from BROADCASTER_ variables."""
