"""The chat demo and cluster dashboard: beside the product, never in its request path.

`install` adds its routes to a node; `broadcaster demo` runs its producer.
"""

from broadcaster.demo.routes import install

__all__ = ["install"]
