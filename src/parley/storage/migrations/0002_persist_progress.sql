-- How far the persistence worker has written each partition of the log:
-- every message of a partition below next_offset is in `messages`. Written
-- in the same transaction as the rows, so it is never ahead of them. The
-- gateways keep a room's recent messages in memory until this passes them,
-- so history and resume have no gap while persistence lags.
CREATE TABLE persist_progress (
    topic TEXT NOT NULL,
    partition_id INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (topic, partition_id)
);
