"""Parley: a real-time chat backend whose messages flow through Apache Kafka."""

__version__ = "0.1.0"
