"""The node's edge: the aiohttp application and its endpoints, settings, limits and
authentication, logs, and the process that serves it (one, or `--workers N`)."""
