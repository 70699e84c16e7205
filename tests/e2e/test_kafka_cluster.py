"""The three-broker KRaft cluster of scripts/kafka-cluster.sh replicates as configured.

Starts the cluster (or reuses a running one), creates a topic with 3 partitions and
replication factor 3, checks every partition has 3 replicas all in sync, produces 100
messages with acks=all and idempotence, consumes them back in order, and stops the
cluster again.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # where it is defined (and typed)

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO_ROOT / "scripts" / "kafka-cluster.sh"
BOOTSTRAP_PREFIX = "PARLEY_KAFKA_BOOTSTRAP="

PARTITIONS = 3
REPLICATION = 3
MESSAGES = 100


def _run_script(*args: str, timeout: float) -> str:
    proc = subprocess.run(
        [str(CLUSTER_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{CLUSTER_SCRIPT.name} {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stderr}\n{proc.stdout}"
        )
    return proc.stdout


@pytest.fixture(scope="module")
def cluster_bootstrap() -> Iterator[str]:
    try:
        stdout = _run_script("start", timeout=240)
        lines = stdout.strip().splitlines()
        assert lines, "kafka-cluster.sh start printed nothing on stdout"
        last = lines[-1]
        assert last.startswith(BOOTSTRAP_PREFIX), last
        bootstrap = last.removeprefix(BOOTSTRAP_PREFIX)
        assert len(bootstrap.split(",")) == REPLICATION, bootstrap
        yield bootstrap
    finally:
        # the test stops what it starts (also when start failed half-way)
        _run_script("stop", timeout=120)


def _wait_for_topic(admin: AdminClient, topic: str, deadline: float) -> Any:
    """Metadata of `topic` once all partitions have a full, in-sync replica set."""
    last: Any = None
    while time.monotonic() < deadline:
        md = admin.list_topics(topic=topic, timeout=10)
        last = md.topics.get(topic)
        if (
            last is not None
            and last.error is None
            and len(last.partitions) == PARTITIONS
            and all(
                len(p.replicas) == REPLICATION and len(p.isrs) == REPLICATION
                for p in last.partitions.values()
            )
        ):
            return last
        time.sleep(0.2)
    raise AssertionError(f"topic {topic} not fully replicated in time: {last!r}")


@pytest.mark.cluster
@pytest.mark.timeout(300)
def test_three_broker_cluster_replicates_and_delivers_in_order(cluster_bootstrap: str) -> None:
    topic = f"parley-cluster-test-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": cluster_bootstrap})

    brokers = admin.list_topics(timeout=10).brokers
    assert sorted(brokers) == [1, 2, 3]

    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=REPLICATION)],
        operation_timeout=30,
    )
    futures[topic].result(timeout=60)

    try:
        meta = _wait_for_topic(admin, topic, time.monotonic() + 60)
        for pid, partition in meta.partitions.items():
            assert sorted(partition.replicas) == [1, 2, 3], (pid, partition.replicas)
            assert sorted(partition.isrs) == [1, 2, 3], (pid, partition.isrs)
            assert partition.leader in (1, 2, 3), (pid, partition.leader)

        producer = Producer(
            {
                "bootstrap.servers": cluster_bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
            }
        )
        delivered: list[tuple[int, int, int]] = []  # (seq, partition, offset)
        errors: list[str] = []

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                errors.append(str(err))
                return
            value, partition, offset = msg.value(), msg.partition(), msg.offset()
            assert value is not None and partition is not None and offset is not None
            delivered.append((int(value.decode()), partition, offset))

        for seq in range(MESSAGES):
            # three keys; a key always lands in the same partition
            producer.produce(
                topic,
                key=f"key-{seq % 3}".encode(),
                value=str(seq).encode(),
                on_delivery=on_delivery,
            )
            producer.poll(0)
        remaining = producer.flush(60)
        assert remaining == 0, f"{remaining} messages not delivered"
        assert errors == []
        assert sorted(seq for seq, _, _ in delivered) == list(range(MESSAGES))

        consumer = Consumer(
            {
                "bootstrap.servers": cluster_bootstrap,
                "group.id": f"{topic}-reader",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        received: list[tuple[int, int, int, bytes]] = []  # (partition, offset, seq, key)
        try:
            consumer.subscribe([topic])
            deadline = time.monotonic() + 90
            while len(received) < MESSAGES and time.monotonic() < deadline:
                for msg in consumer.consume(num_messages=MESSAGES, timeout=1.0):
                    err = msg.error()
                    if err is not None:
                        raise KafkaException(err)
                    value, key = msg.value(), msg.key()
                    partition, offset = msg.partition(), msg.offset()
                    assert value is not None and key is not None
                    assert partition is not None and offset is not None
                    received.append((partition, offset, int(value.decode()), key))
        finally:
            consumer.close()

        assert len(received) == MESSAGES, f"received {len(received)} of {MESSAGES}"
        assert sorted(seq for _, _, seq, _ in received) == list(range(MESSAGES))

        # Per partition: offsets consecutive from 0 and sequence numbers increasing,
        # i.e. everything arrived exactly once and in production order.
        by_partition: dict[int, list[tuple[int, int, bytes]]] = {}
        for partition, offset, seq, key in received:
            by_partition.setdefault(partition, []).append((offset, seq, key))
        for partition, records in by_partition.items():
            offsets = [offset for offset, _, _ in records]
            seqs = [seq for _, seq, _ in records]
            assert offsets == list(range(len(records))), (partition, offsets)
            assert seqs == sorted(seqs), (partition, seqs)
        by_key: dict[bytes, list[int]] = {}
        for _, _, seq, key in received:
            by_key.setdefault(key, []).append(seq)
        for key, seqs in by_key.items():
            assert seqs == sorted(seqs), (key, seqs)
        # the consumer saw exactly what the producer's delivery reports said
        assert sorted((p, o, s) for p, o, s, _ in received) == sorted(
            (p, o, s) for s, p, o in delivered
        )
    finally:
        admin.delete_topics([topic], operation_timeout=30)[topic].result(timeout=60)
