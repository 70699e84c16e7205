-- Rooms, memberships and the persisted messages.
-- Written in the SQL that SQLite and PostgreSQL share.
CREATE TABLE rooms (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner TEXT,
    kind TEXT NOT NULL DEFAULT 'group',
    created_ms BIGINT NOT NULL
);

CREATE TABLE members (
    room_id TEXT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    last_read BIGINT NOT NULL DEFAULT -1,
    joined_ms BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

CREATE INDEX members_by_user ON members (user_id);

-- seq is the record's offset in the log: the primary key makes a re-read
-- harmless, the unique (room, sender, client_id) drops a retried send that
-- reached the log twice.
CREATE TABLE messages (
    room_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    id TEXT NOT NULL,
    sender TEXT NOT NULL,
    client_id TEXT NOT NULL,
    body TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    PRIMARY KEY (room_id, seq)
);

CREATE UNIQUE INDEX messages_idempotency ON messages (room_id, sender, client_id);
