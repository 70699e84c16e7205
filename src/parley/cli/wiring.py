"""Chooses the log and the store from the settings; nothing else does."""

from __future__ import annotations

from parley.config import Settings
from parley.log.base import Log
from parley.storage.base import Store


def make_log(settings: Settings, client_id: str) -> Log:
    if settings.kafka_bootstrap:
        from parley.log.kafka import KafkaLog

        return KafkaLog(
            settings.kafka_bootstrap,
            client_id=client_id,
            replication_factor=settings.replication_factor,
            timeout_ms=settings.kafka_timeout_ms,
        )
    from parley.log.embedded import EmbeddedLog

    return EmbeddedLog(settings.data_dir / "log")


def make_store(settings: Settings) -> Store:
    url = settings.database_url
    if url.startswith("sqlite:///"):
        from parley.storage.sqlite import SqliteStore

        return SqliteStore(url[len("sqlite:///") :])
    from parley.storage.postgres import PostgresStore

    return PostgresStore(url)
