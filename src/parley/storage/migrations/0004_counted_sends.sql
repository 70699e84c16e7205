-- The sends the analytics worker has counted, keyed like a message's
-- idempotency: a send that reached the log twice (a retry on two gateways at
-- once) is counted once, as it is delivered and stored once. Rows older than
-- the idempotency window are pruned by the worker.
CREATE TABLE counted_sends (
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    client_id TEXT NOT NULL,
    minute_ms BIGINT NOT NULL,
    batch TEXT NOT NULL,
    PRIMARY KEY (room_id, sender, client_id)
);

CREATE INDEX counted_sends_batch ON counted_sends (batch);

CREATE INDEX counted_sends_minute ON counted_sends (minute_ms);
