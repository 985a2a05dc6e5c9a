"""`python -m broadcaster`."""

from .cli import main

main()
