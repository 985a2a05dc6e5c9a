"""The demo's own settings: BROADCASTER_DEMO and BROADCASTER_DEMO_*."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DemoSettings(BaseSettings):
    """The chat demo's settings (see `NodeSettings` for how descriptions are used)."""

    model_config = SettingsConfigDict(env_prefix="BROADCASTER_", frozen=True, extra="ignore")

    demo: Literal["auto", "on", "off"] = Field(
        default="auto",
        description=(
            "`auto`: the chat demo answers on this node with the embedded broker, and is queued "
            "for `broadcaster demo` with Redis. `on`: always answer here. `off`: `/demo/ask` "
            "answers `403`; `/`, `/dashboard` and `/cluster` are not served."
        ),
    )
    demo_token_delay: float = Field(
        default=0.05, ge=0, le=10, description="Seconds between the demo's tokens."
    )
    demo_prefix: str = Field(
        default="demo:",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9\-_.:@/=]+$",
        description="The demo answers only on channels starting with this.",
    )
    demo_queue_max: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description=(
            "Questions waiting in the Redis queue, or answered at once by one node or producer; "
            "more get `503`."
        ),
    )
    demo_job_ttl: float = Field(
        default=60.0,
        gt=0,
        le=86400,
        description=(
            "Seconds a queued question stays worth answering; the producer drops older ones, and "
            "the queue expires this long after its last question."
        ),
    )
    demo_asks_per_minute: int = Field(
        default=10,
        ge=1,
        le=100_000,
        description="Questions per client address per minute, per node; more get `429`.",
    )
