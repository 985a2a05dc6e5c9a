"""The chat demo and cluster dashboard: beside the product, never in its request path.

`part(settings)` is the demo as an optional part of a node (its routes and lifecycle);
`broadcaster demo` runs its producer. Its settings are its own (`DemoSettings`).
"""

from broadcaster.demo.routes import part
from broadcaster.demo.settings import DemoSettings

__all__ = ["DemoSettings", "part"]
