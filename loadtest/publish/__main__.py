"""`python -m loadtest.publish`: the same as `python -m loadtest publish`."""

import sys

from . import command_line

sys.exit(command_line())
