"""Load generator for the broadcaster SSE service: `python -m loadtest <scenario>`."""
