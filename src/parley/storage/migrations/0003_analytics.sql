-- The analytics worker's counters, per room and minute. Each batch adds to
-- them in the same transaction that moves the worker's own progress row in
-- persist_progress (a compare-and-set), so a batch is counted exactly once.
CREATE TABLE room_minutes (
    room_id TEXT NOT NULL,
    minute_ms BIGINT NOT NULL,
    messages BIGINT NOT NULL DEFAULT 0,
    lat_count BIGINT NOT NULL DEFAULT 0,
    lat_sum_ms BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, minute_ms)
);

-- Who sent in a room in a minute: inserting twice changes nothing.
CREATE TABLE room_active (
    room_id TEXT NOT NULL,
    minute_ms BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (room_id, minute_ms, user_id)
);
