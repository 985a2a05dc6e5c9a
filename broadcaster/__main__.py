"""`python -m broadcaster`."""

from broadcaster.cli import main

main()
