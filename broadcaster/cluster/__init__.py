"""`broadcaster cluster`: a local cluster (Redis, nodes, nginx) run as processes, for
development and tests."""
