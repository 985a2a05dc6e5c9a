"""Entry point: `python -m loadtest <scenario> [options]`."""

import sys

from .cli import main

sys.exit(main())
