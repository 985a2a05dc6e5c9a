"""`broadcaster serve --workers N`: N full nodes on one port (SO_REUSEPORT), one per core.

`supervisor` starts, restarts and drains the worker processes; `slot` is what each worker
knows of the others; `metrics` makes one scrape of the shared port show every worker.
"""
