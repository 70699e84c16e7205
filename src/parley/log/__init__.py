"""Log backends: the interface in base.py, an embedded one and Apache Kafka."""
