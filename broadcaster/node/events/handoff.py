"""Taking a live stream's connection from aiohttp, so that only what the stream needs stays.

While a handler runs, aiohttp keeps for its connection the parsed request, the protocol
and its parser, the response and its writer, two tasks and a stack of coroutine frames:
about 9 KB of the 12 KB an idle stream cost. None of it is needed once the headers and
the preamble are out: from then on the node only writes, and the client has nothing more
to say. So the stream becomes the connection's protocol, aiohttp is told the
connection is no longer its own, the handler returns, and aiohttp lets go of everything.

aiohttp has no public way to take a connection over; this relies on its request handler
closing nothing once its `transport` is None, and releasing its state in
`connection_lost`. The end-to-end tests (streams, shutdown, slow and gone clients) and
`tests/integration/test_handoff.py` (nothing of aiohttp's outlives the hand-off) guard it.
"""

from __future__ import annotations

from aiohttp import web

from broadcaster.delivery.stream import Stream


def hand_off(request: web.Request, stream: Stream) -> None:
    """Give `request`'s connection to `stream`; aiohttp forgets it once the handler returns.

    The response must not end its body either: the stream does that when it ends.
    """
    transport = request.transport
    if transport is None:  # aiohttp saw the connection go
        raise ConnectionResetError("the client went away before its stream went live")
    handler = request.protocol  # aiohttp's request handler for this connection
    task = request.task  # the handler's request loop
    transport.set_protocol(stream)
    transport.resume_reading()  # to notice the client leave, even if aiohttp had paused
    # aiohttp closes its transport when its request loop ends: now it has none, and the
    # loop ends after this request...
    handler.transport = None
    handler.force_close()
    # ...whereupon the handler drops its parser, request and tasks, as if the connection
    # were lost.
    task.add_done_callback(lambda _: handler.connection_lost(None))
