"""The deployment configs: the one source that docker-compose.yml mounts, shipped in the
wheel as `broadcaster.deploy` so that `broadcaster cluster` runs from an installed package."""
