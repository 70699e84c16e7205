"""Settings from `PARLEY_*` variables and command-line flags.

Every setting is read and checked here, once, at start-up: a missing or wrong
one raises ConfigError naming it, which the CLI prints as one line.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from parley.auth.tokens import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)

DEV_SECRET = "parley-dev-secret-do-not-use-in-production"


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the variable."""


@dataclass(slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    node_id: str = ""
    dev: bool = False
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    kafka_bootstrap: str | None = None
    topic_prefix: str = "parley"
    partitions: int = 12
    replication_factor: int | None = None
    database_url: str = "sqlite:///.parley/parley.db"
    data_dir: Path = field(default_factory=lambda: Path(".parley"))
    workers: tuple[str, ...] = ("persist",)
    rate_per_s: float = 20.0
    rate_burst: int = 40
    replay_cap: int = 1000
    room_window: int = 1000
    session_queue_bytes: int = 8 * 1024 * 1024
    idempotency_window_s: int = 24 * 3600
    log_retention_ms: int = 7 * 24 * 3600 * 1000
    notify_url: str | None = None
    notify_secret: str | None = None
    notify_coalesce_s: float = 2.0
    metrics_port: int = 9101
    allowed_origins: tuple[str, ...] | None = None
    drain_timeout_s: float = 10.0
    handshake_rate: float = 50.0
    handshake_burst: int = 200
    max_connections_per_user: int = 32
    user_handshake_rate: float = 10.0
    user_handshake_burst: int = 100
    ip_rate_per_s: float = 200.0
    ip_rate_burst: int = 400
    max_connections_per_ip: int = 1000
    ip_limits_exempt: tuple[Network, ...] = LOOPBACK
    trusted_proxies: tuple[Network, ...] = ()
    presence_timeout_s: float = 15.0
    # Each socket is looked at every this many seconds: pinged if nothing came
    # since the last look, dropped if nothing came since the ping.
    ping_interval_s: float = 10.0
    presence_max_room: int = 500
    kafka_timeout_ms: int = 15000
    log_level: str = "INFO"
    event_loop: str = "uvloop"  # or "asyncio" (the standard library's)


KNOWN_WORKERS = ("persist", "notify", "analytics")


def default_node_id() -> str:
    """Host, pid and a random suffix: unique even where every container is pid 1."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive number, got {raw!r}")
    return value


def _networks(
    env: Mapping[str, str], name: str, default: tuple[Network, ...]
) -> tuple[Network, ...]:
    """Comma-separated addresses or CIDR networks; set but empty (or `none`): none."""
    raw = env.get(name)
    if raw is None:
        return default
    nets: list[Network] = []
    for part in (p.strip() for p in raw.split(",")):
        if part and part.lower() != "none":
            try:
                nets.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ConfigError(f"{name}: {part!r} is not an address or a network") from None
    return tuple(nets)


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _read_key(value: str, name: str) -> str:
    if "-----BEGIN" in value:
        return value
    try:
        return Path(value).read_text()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {value!r}: {exc.strerror}") from None


def load_settings(env: Mapping[str, str] | None = None, *, need_auth: bool = True) -> Settings:
    """Build Settings from an environment (flags are merged into it by the CLI)."""
    env = os.environ if env is None else env
    s = Settings()
    s.host = env.get("PARLEY_HOST") or s.host
    s.port = _int(env, "PARLEY_PORT", s.port)
    if s.port > 65535:
        raise ConfigError(f"PARLEY_PORT must be at most 65535, got {s.port}")
    s.dev = _bool(env, "PARLEY_DEV")
    s.node_id = env.get("PARLEY_NODE_ID") or default_node_id()
    if not _PREFIX.fullmatch(s.node_id):
        raise ConfigError(f"PARLEY_NODE_ID must match [A-Za-z0-9_.-]{{1,100}}, got {s.node_id!r}")
    s.data_dir = Path(env.get("PARLEY_DATA_DIR") or ".parley")
    s.database_url = env.get("PARLEY_DATABASE_URL") or f"sqlite:///{s.data_dir / 'parley.db'}"
    if not s.database_url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ConfigError(
            "PARLEY_DATABASE_URL must start with sqlite:///, postgresql:// or postgres://"
        )
    s.kafka_bootstrap = env.get("PARLEY_KAFKA_BOOTSTRAP") or None
    s.topic_prefix = env.get("PARLEY_TOPIC_PREFIX") or s.topic_prefix
    if not _PREFIX.fullmatch(s.topic_prefix):
        raise ConfigError(
            f"PARLEY_TOPIC_PREFIX must match [A-Za-z0-9_.-]{{1,100}}, got {s.topic_prefix!r}"
        )
    s.partitions = _int(env, "PARLEY_PARTITIONS", s.partitions, minimum=1)
    rf = _int(env, "PARLEY_REPLICATION_FACTOR", 0)
    s.replication_factor = rf or None
    workers = env.get("PARLEY_WORKERS")
    if workers is not None:
        names = tuple(w.strip() for w in workers.split(",") if w.strip())
        for name in names:
            if name not in KNOWN_WORKERS:
                raise ConfigError(
                    f"PARLEY_WORKERS: unknown worker {name!r} (known: {', '.join(KNOWN_WORKERS)})"
                )
        s.workers = names
    s.rate_per_s = _float(env, "PARLEY_RATE_LIMIT", s.rate_per_s)
    s.rate_burst = _int(env, "PARLEY_RATE_BURST", s.rate_burst, minimum=1)
    s.replay_cap = _int(env, "PARLEY_REPLAY_CAP", s.replay_cap, minimum=1)
    s.room_window = _int(env, "PARLEY_ROOM_WINDOW", s.room_window, minimum=1)
    s.session_queue_bytes = _int(env, "PARLEY_SESSION_QUEUE_BYTES", s.session_queue_bytes, 65536)
    s.idempotency_window_s = _int(env, "PARLEY_IDEMPOTENCY_WINDOW", s.idempotency_window_s, 1)
    s.presence_timeout_s = _float(env, "PARLEY_PRESENCE_TIMEOUT", s.presence_timeout_s)
    s.presence_max_room = _int(env, "PARLEY_PRESENCE_MAX_ROOM", s.presence_max_room, minimum=2)
    s.ping_interval_s = _float(env, "PARLEY_PING_INTERVAL", s.ping_interval_s)
    hours = _float(env, "PARLEY_LOG_RETENTION_HOURS", s.log_retention_ms / 3_600_000)
    s.log_retention_ms = int(hours * 3_600_000)
    if s.log_retention_ms < s.idempotency_window_s * 1000:
        # A retried send is recognised by reading its first record back from
        # the log at start-up: the log must keep the whole window.
        raise ConfigError(
            f"PARLEY_LOG_RETENTION_HOURS ({hours:g}) must cover PARLEY_IDEMPOTENCY_WINDOW "
            f"({s.idempotency_window_s} s)"
        )
    s.notify_url = env.get("PARLEY_NOTIFY_URL") or None
    if s.notify_url is not None and not s.notify_url.startswith(("http://", "https://")):
        raise ConfigError(f"PARLEY_NOTIFY_URL must be an http(s) URL, got {s.notify_url!r}")
    s.notify_secret = env.get("PARLEY_NOTIFY_SECRET") or None
    s.notify_coalesce_s = _float(env, "PARLEY_NOTIFY_COALESCE", s.notify_coalesce_s)
    s.metrics_port = _int(env, "PARLEY_METRICS_PORT", s.metrics_port)
    origins = env.get("PARLEY_ALLOWED_ORIGINS")
    if origins:
        s.allowed_origins = tuple(o.strip().rstrip("/") for o in origins.split(",") if o.strip())
        for origin in s.allowed_origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ConfigError(
                    f"PARLEY_ALLOWED_ORIGINS: {origin!r} is not an origin like https://chat.example"
                )
        if "*" in s.allowed_origins:
            s.allowed_origins = None
    s.drain_timeout_s = _float(env, "PARLEY_DRAIN_TIMEOUT", s.drain_timeout_s)
    s.handshake_rate = _float(env, "PARLEY_HANDSHAKE_RATE", s.handshake_rate)
    s.handshake_burst = _int(env, "PARLEY_HANDSHAKE_BURST", s.handshake_burst, minimum=1)
    s.max_connections_per_user = _int(
        env, "PARLEY_MAX_CONNECTIONS_PER_USER", s.max_connections_per_user, minimum=1
    )
    s.user_handshake_rate = _float(env, "PARLEY_USER_HANDSHAKE_RATE", s.user_handshake_rate)
    s.user_handshake_burst = _int(
        env, "PARLEY_USER_HANDSHAKE_BURST", s.user_handshake_burst, minimum=1
    )
    s.ip_rate_per_s = _float(env, "PARLEY_IP_RATE_LIMIT", s.ip_rate_per_s)
    s.ip_rate_burst = _int(env, "PARLEY_IP_RATE_BURST", s.ip_rate_burst, minimum=1)
    s.max_connections_per_ip = _int(
        env, "PARLEY_MAX_CONNECTIONS_PER_IP", s.max_connections_per_ip, minimum=1
    )
    s.ip_limits_exempt = _networks(env, "PARLEY_IP_LIMITS_EXEMPT", s.ip_limits_exempt)
    s.trusted_proxies = _networks(env, "PARLEY_TRUSTED_PROXIES", s.trusted_proxies)
    if s.metrics_port > 65535:
        raise ConfigError(f"PARLEY_METRICS_PORT must be at most 65535, got {s.metrics_port}")
    s.kafka_timeout_ms = _int(env, "PARLEY_KAFKA_TIMEOUT_MS", s.kafka_timeout_ms, minimum=1000)
    s.log_level = (env.get("PARLEY_LOG_LEVEL") or s.log_level).upper()
    if s.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(
            f"PARLEY_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {s.log_level!r}"
        )

    s.event_loop = (env.get("PARLEY_EVENT_LOOP") or s.event_loop).lower()
    if s.event_loop not in ("uvloop", "asyncio"):
        raise ConfigError(f"PARLEY_EVENT_LOOP must be uvloop or asyncio, got {s.event_loop!r}")

    s.jwt_secret = env.get("PARLEY_JWT_SECRET") or None
    if s.jwt_secret is None and s.dev:
        s.jwt_secret = DEV_SECRET
    key = env.get("PARLEY_JWT_PUBLIC_KEY")
    if key:
        s.jwt_public_key = _read_key(key, "PARLEY_JWT_PUBLIC_KEY")
    algs = env.get("PARLEY_JWT_ALGORITHMS")
    if algs:
        s.jwt_algorithms = tuple(a.strip() for a in algs.split(",") if a.strip())
    elif s.jwt_public_key and not s.jwt_secret:
        s.jwt_algorithms = ("RS256", "ES256")
    elif s.jwt_public_key:
        s.jwt_algorithms = ("HS256", "RS256", "ES256")
    for alg in s.jwt_algorithms:
        if alg not in HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS:
            raise ConfigError(f"PARLEY_JWT_ALGORITHMS: algorithm {alg!r} is not supported")
        if alg in HMAC_ALGORITHMS and not s.jwt_secret and need_auth:
            raise ConfigError("PARLEY_JWT_SECRET is not set (required without --dev)")
        if alg in ASYMMETRIC_ALGORITHMS and not s.jwt_public_key and need_auth:
            raise ConfigError(f"PARLEY_JWT_PUBLIC_KEY is not set (required by {alg})")
    s.jwt_issuer = env.get("PARLEY_JWT_ISSUER") or None
    s.jwt_audience = env.get("PARLEY_JWT_AUDIENCE") or None
    return s
