"""The brokers: the `Broker` protocol, the embedded one (`memory.py`) and Redis (`redis/`)."""
