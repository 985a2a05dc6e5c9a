"""Delivery inside one node: the hub (channels to streams), each client's stream, and
the outbox that writes them."""
