"""Streaming to clients, one concept per module.

`endpoint` admits a subscriber (`GET /events`), `response` sends its headers and preamble
and hands its socket to the hub, `stream` is one client's live connection, and `outbox`
the coalescing writer that flushes each loop turn's frames.
"""
