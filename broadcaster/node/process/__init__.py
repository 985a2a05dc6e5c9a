"""The node as a process: its application (`app`), serving it on a port (`server`), and
the parent of `--workers` nodes (`supervisor`). Above the rest of `node`, which never
imports it."""
