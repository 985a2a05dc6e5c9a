"""JWTs for tests, signed with a test secret."""

from __future__ import annotations

import time
from typing import Any

import jwt

SECRET = "jwt-secret-for-tests-only-32-bytes!"


def token(key: Any = SECRET, algorithm: str = "HS256", expires: float = 60, **claims: Any) -> str:
    """A token expiring in `expires` seconds, with `claims` (subscribe=, publish=...)."""
    return jwt.encode({"exp": int(time.time() + expires), **claims}, key, algorithm=algorithm)
