"""Settings from PARLEY_* variables: defaults, and a ConfigError naming each bad one."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from parley.config import DEV_SECRET, ConfigError, Settings, load_settings

AUTH = {"PARLEY_JWT_SECRET": "a-secret"}
PEM = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"


def test_defaults() -> None:
    s = load_settings(AUTH)
    assert re.fullmatch(r"[A-Za-z0-9_.-]+-\d+-[0-9a-f]{6}", s.node_id), s.node_id
    s.node_id = ""
    assert s == Settings(jwt_secret="a-secret")
    assert (s.host, s.port, s.dev) == ("127.0.0.1", 8000, False)
    assert s.database_url == "sqlite:///.parley/parley.db"
    assert s.data_dir == Path(".parley")
    assert (s.kafka_bootstrap, s.topic_prefix, s.partitions, s.replication_factor) == (
        None,
        "parley",
        12,
        None,
    )
    assert s.workers == ("persist",)
    assert (s.rate_per_s, s.rate_burst) == (20.0, 40)
    assert (s.replay_cap, s.room_window) == (1000, 1000)
    assert s.session_queue_bytes == 8 * 1024 * 1024
    assert (s.idempotency_window_s, s.presence_timeout_s, s.kafka_timeout_ms) == (
        86400,
        15.0,
        15000,
    )
    assert (s.log_level, s.jwt_algorithms, s.jwt_issuer, s.jwt_audience) == (
        "INFO",
        ("HS256",),
        None,
        None,
    )


def test_empty_values_mean_the_default() -> None:
    blank = {
        name: ""
        for name in (
            "PARLEY_HOST",
            "PARLEY_PORT",
            "PARLEY_DEV",
            "PARLEY_NODE_ID",
            "PARLEY_PARTITIONS",
            "PARLEY_RATE_LIMIT",
            "PARLEY_PRESENCE_TIMEOUT",
            "PARLEY_LOG_LEVEL",
            "PARLEY_KAFKA_BOOTSTRAP",
        )
    }
    s = load_settings({**AUTH, **blank})
    assert (s.host, s.port, s.partitions, s.rate_per_s, s.log_level) == (
        "127.0.0.1",
        8000,
        12,
        20.0,
        "INFO",
    )
    assert s.kafka_bootstrap is None and str(os.getpid()) in s.node_id


def test_good_values_are_read() -> None:
    s = load_settings(
        {
            **AUTH,
            "PARLEY_HOST": "0.0.0.0",
            "PARLEY_PORT": "9000",
            "PARLEY_NODE_ID": "n-1.a_b",
            "PARLEY_DATA_DIR": "/var/lib/parley",
            "PARLEY_KAFKA_BOOTSTRAP": "k1:9092,k2:9092",
            "PARLEY_TOPIC_PREFIX": "t.est-1",
            "PARLEY_PARTITIONS": "3",
            "PARLEY_REPLICATION_FACTOR": "3",
            "PARLEY_WORKERS": " persist , ",
            "PARLEY_RATE_LIMIT": "2.5",
            "PARLEY_RATE_BURST": "5",
            "PARLEY_PRESENCE_TIMEOUT": "0.5",
            "PARLEY_PING_INTERVAL": "2.5",
            "PARLEY_LOG_LEVEL": "debug",
            "PARLEY_JWT_ISSUER": "iss",
            "PARLEY_JWT_AUDIENCE": "aud",
        }
    )
    assert (s.host, s.port, s.node_id) == ("0.0.0.0", 9000, "n-1.a_b")
    assert s.data_dir == Path("/var/lib/parley")
    assert s.database_url == "sqlite:////var/lib/parley/parley.db"
    assert (s.kafka_bootstrap, s.topic_prefix, s.partitions, s.replication_factor) == (
        "k1:9092,k2:9092",
        "t.est-1",
        3,
        3,
    )
    assert s.workers == ("persist",)
    assert (s.rate_per_s, s.rate_burst, s.presence_timeout_s) == (2.5, 5, 0.5)
    assert s.ping_interval_s == 2.5
    assert (s.log_level, s.jwt_issuer, s.jwt_audience) == ("DEBUG", "iss", "aud")
    assert load_settings({**AUTH, "PARLEY_WORKERS": ""}).workers == ()
    assert load_settings({**AUTH, "PARLEY_REPLICATION_FACTOR": "0"}).replication_factor is None


def test_dev_mode_brings_the_dev_secret() -> None:
    s = load_settings({"PARLEY_DEV": "true"})
    assert (s.dev, s.jwt_secret) == (True, DEV_SECRET)
    assert load_settings({"PARLEY_DEV": "1", **AUTH}).jwt_secret == "a-secret"
    for off in ("0", "false", "no", "OFF"):
        assert load_settings({**AUTH, "PARLEY_DEV": off}).dev is False


def test_a_public_key_inline_or_from_a_file(tmp_path: Path) -> None:
    inline = load_settings({"PARLEY_JWT_PUBLIC_KEY": PEM})
    assert (inline.jwt_public_key, inline.jwt_algorithms) == (PEM, ("RS256", "ES256"))
    path = tmp_path / "key.pem"
    path.write_text(PEM)
    from_file = load_settings({**AUTH, "PARLEY_JWT_PUBLIC_KEY": str(path)})
    assert from_file.jwt_public_key == PEM
    assert from_file.jwt_algorithms == ("HS256", "RS256", "ES256")


def test_auth_may_be_left_out_when_not_needed() -> None:
    s = load_settings({}, need_auth=False)
    assert s.jwt_secret is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PARLEY_PORT", "http"),
        ("PARLEY_PORT", "-1"),
        ("PARLEY_PORT", "65536"),
        ("PARLEY_PORT", "80.5"),
        ("PARLEY_DEV", "maybe"),
        ("PARLEY_DEV", "2"),
        ("PARLEY_NODE_ID", "bad id"),
        ("PARLEY_NODE_ID", "n" * 101),
        ("PARLEY_NODE_ID", "a/b"),
        ("PARLEY_DATABASE_URL", "mysql://db/parley"),
        ("PARLEY_DATABASE_URL", "sqlite://relative.db"),
        ("PARLEY_DATABASE_URL", "/tmp/parley.db"),
        ("PARLEY_TOPIC_PREFIX", "a b"),
        ("PARLEY_TOPIC_PREFIX", "p" * 101),
        ("PARLEY_TOPIC_PREFIX", "ü"),
        ("PARLEY_PARTITIONS", "0"),
        ("PARLEY_PARTITIONS", "-3"),
        ("PARLEY_PARTITIONS", "twelve"),
        ("PARLEY_REPLICATION_FACTOR", "three"),
        ("PARLEY_REPLICATION_FACTOR", "-1"),
        ("PARLEY_WORKERS", "persist,bogus"),
        ("PARLEY_WORKERS", "mailer"),
        ("PARLEY_RATE_LIMIT", "0"),
        ("PARLEY_RATE_LIMIT", "-1"),
        ("PARLEY_RATE_LIMIT", "fast"),
        ("PARLEY_RATE_BURST", "0"),
        ("PARLEY_RATE_BURST", "1.5"),
        ("PARLEY_REPLAY_CAP", "0"),
        ("PARLEY_ROOM_WINDOW", "0"),
        ("PARLEY_SESSION_QUEUE_BYTES", "65535"),
        ("PARLEY_SESSION_QUEUE_BYTES", "8MiB"),
        ("PARLEY_IDEMPOTENCY_WINDOW", "0"),
        ("PARLEY_PRESENCE_TIMEOUT", "0"),
        ("PARLEY_PRESENCE_TIMEOUT", "-5"),
        ("PARLEY_PRESENCE_TIMEOUT", "soon"),
        ("PARLEY_PING_INTERVAL", "0"),
        ("PARLEY_PING_INTERVAL", "never"),
        ("PARLEY_USER_HANDSHAKE_RATE", "0"),
        ("PARLEY_USER_HANDSHAKE_BURST", "0"),
        ("PARLEY_IP_RATE_LIMIT", "0"),
        ("PARLEY_IP_RATE_BURST", "0"),
        ("PARLEY_MAX_CONNECTIONS_PER_IP", "0"),
        ("PARLEY_IP_LIMITS_EXEMPT", "localhost"),
        ("PARLEY_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("PARLEY_TRUSTED_PROXIES", "proxy.internal"),
        ("PARLEY_KAFKA_TIMEOUT_MS", "999"),
        ("PARLEY_KAFKA_TIMEOUT_MS", "x"),
        ("PARLEY_LOG_LEVEL", "verbose"),
        ("PARLEY_LOG_LEVEL", "TRACE"),
        ("PARLEY_JWT_ALGORITHMS", "HS256,none"),
        ("PARLEY_JWT_ALGORITHMS", "XYZ"),
        ("PARLEY_JWT_PUBLIC_KEY", "/nonexistent/parley/key.pem"),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**AUTH, name: value})
    assert name in str(caught.value)


@pytest.mark.parametrize("name", ["PARLEY_RATE_LIMIT", "PARLEY_PRESENCE_TIMEOUT"])
def test_not_a_number_is_refused(name: str) -> None:
    """`nan` passes a `<= 0` check; as a presence timeout it would never expire a node."""
    with pytest.raises(ConfigError) as caught:
        load_settings({**AUTH, name: "nan"})
    assert name in str(caught.value)


def test_missing_secrets_name_their_variable() -> None:
    with pytest.raises(ConfigError, match="PARLEY_JWT_SECRET"):
        load_settings({})
    with pytest.raises(ConfigError, match="PARLEY_JWT_PUBLIC_KEY"):
        load_settings({**AUTH, "PARLEY_JWT_ALGORITHMS": "HS256,RS256"})


def test_address_limit_networks() -> None:
    base = {"PARLEY_JWT_SECRET": "s"}
    assert [str(n) for n in load_settings(base).ip_limits_exempt] == ["127.0.0.0/8", "::1/128"]
    assert load_settings({**base, "PARLEY_IP_LIMITS_EXEMPT": ""}).ip_limits_exempt == ()
    assert load_settings({**base, "PARLEY_IP_LIMITS_EXEMPT": "none"}).ip_limits_exempt == ()
    proxies = load_settings({**base, "PARLEY_TRUSTED_PROXIES": "10.0.0.1, fd00::/8"})
    assert [str(n) for n in proxies.trusted_proxies] == ["10.0.0.1/32", "fd00::/8"]
