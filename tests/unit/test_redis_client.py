"""Redis URLs: plain ones, redis+sentinel:// with its Sentinels, service, db and auth, and
redis+cluster:// with a Redis Cluster's seed nodes."""

from __future__ import annotations

import pytest

from broadcaster.brokers.redis.client import ClusterURL, SentinelURL, check_url, redacted
from broadcaster.settings import Settings


def test_a_sentinel_url_names_sentinels_service_db_and_credentials() -> None:
    parsed = SentinelURL.parse(
        "redis+sentinel://app:p%40ss@10.0.0.1:26379,[::1]:26380/cache/3?sentinel_password=s"
    )
    assert parsed.sentinels == [("10.0.0.1", 26379), ("::1", 26380)]
    assert (parsed.service, parsed.db) == ("cache", 3)
    assert (parsed.username, parsed.password) == ("app", "p@ss")
    assert parsed.sentinel_options()["password"] == "s"
    assert parsed.server_options()["password"] == "p@ss"
    plain = SentinelURL.parse("redis+sentinel://127.0.0.1:26379/primary")
    assert (plain.db, plain.password, plain.sentinel_auth) == (0, None, {})


def test_a_cluster_url_names_seed_nodes_and_credentials() -> None:
    parsed = ClusterURL.parse("rediss+cluster://app:p%40ss@10.0.0.1:7000,[::1]:7001")
    assert parsed.seeds == [("10.0.0.1", 7000), ("::1", 7001)]
    assert (parsed.tls, parsed.username, parsed.password) == (True, "app", "p@ss")
    assert ClusterURL.parse("redis+cluster://h:7000") == ClusterURL([("h", 7000)])
    assert check_url("redis+cluster://h:7000,h:7001") == "redis+cluster://h:7000,h:7001"
    assert redacted("redis+cluster://:secret@h:7000") == "redis+cluster://***@h:7000"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://localhost", "must start with redis://"),
        ("redis+cluster://", "name at least one node"),
        ("redis+cluster://h/0", "is not host:port"),
        ("redis+cluster://h:7000/0", "no database"),
        ("localhost:6379", "must start with redis://"),
        ("redis+sentinel://127.0.0.1:26379", "the path is /<service>"),
        ("redis+sentinel://127.0.0.1/primary", "is not host:port"),
        ("redis+sentinel:///primary", "name at least one Sentinel"),
        ("redis+sentinel://h:1/primary/zero", "the database must be a number"),
        ("redis+sentinel://h:1/primary?password=x", "unknown query parameter 'password'"),
    ],
)
def test_bad_urls_are_refused_with_a_reason(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_url(url)
    with pytest.raises(ValueError, match=reason):
        Settings(redis_url=url)


def test_logs_never_show_a_password() -> None:
    assert redacted("redis://:secret@db:6379/0") == "redis://***@db:6379/0"
    assert redacted("redis://db:6379") == "redis://db:6379"
    url = "redis+sentinel://u:secret@h1:1,h2:2/primary?sentinel_password=also"
    assert "secret" not in redacted(url) and "also" not in redacted(url)
    assert redacted(url) == "redis+sentinel://***@h1:1,h2:2/primary?sentinel_password=***"


@pytest.mark.parametrize(
    "url",
    [
        "redis://:Qa1/Zb2@127.0.0.1:6379/0",  # the / ends the host part early
        "redis://:Qa1:Zb2@127.0.0.1:6379/0",
        "redis://:Qa1@Zb2@127.0.0.1:x/0",
        "redis://:Qa1?Zb2@127.0.0.1:6379/0",
        "redis+sentinel://:Qa1/Zb2@h:1/primary",
        "redis+sentinel://:Qa1@Zb2@h:1,k:zz/primary",
    ],
)
def test_a_password_with_unencoded_characters_leaks_nowhere(url: str) -> None:
    try:
        check_url(url)
    except ValueError as refused:
        assert "percent-encode" in str(refused)
        assert "Qa1" not in str(refused) and "Zb2" not in str(refused)
    assert "Qa1" not in redacted(url) and "Zb2" not in redacted(url)
