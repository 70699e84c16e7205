"""Local sessions by room and by user; fan-out only.

The hub knows nothing of the log or the store: the node hands it messages
already deduplicated per room, and the hub keeps each session's promise of
exactly once and in seq order with the session's `last_seq`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from parley.gateway.session import Session, Subscription
from parley.gateway.writer import text_frame
from parley.protocol.messages import ChatMessage

MAX_JOIN_BUFFER = 10_000


class Hub:
    def __init__(self) -> None:
        # A room's sessions in the order they joined (a dict, not a set): the
        # fan-out then writes to sockets in about the order they were accepted,
        # which keeps the kernel's per-socket state and ours close in memory
        # (in hash order a set's fan-out took 25 ms of CPU per 2,500 sessions
        # against 17 in join order: bench/analysis.md, big room).
        self._rooms: dict[str, dict[Session, Subscription]] = {}
        # A user's sessions are a tuple: nearly always one or two, and an
        # empty set alone is 216 bytes (a tuple of one, 48), per connection.
        self._users: dict[str, tuple[Session, ...]] = {}

    # Sessions ---------------------------------------------------------------

    def add(self, session: Session) -> bool:
        """Register a session; True if it is the user's first on this node."""
        sessions = self._users.get(session.user, ())
        if session in sessions:
            return False
        self._users[session.user] = (*sessions, session)
        return not sessions

    def remove(self, session: Session) -> bool:
        """Forget a session; True if it was the user's last on this node."""
        for room in list(session.subscriptions):
            self.leave(session, room)
        sessions = self._users.get(session.user, ())
        if session not in sessions:
            return False
        rest = tuple(s for s in sessions if s is not session)
        if rest:
            self._users[session.user] = rest
            return False
        del self._users[session.user]
        return True

    def sessions_of(self, user: str) -> Iterable[Session]:
        return self._users.get(user, ())

    def users(self) -> list[str]:
        return list(self._users)

    def all_sessions(self) -> list[Session]:
        return [s for sessions in self._users.values() for s in sessions]

    # Rooms ------------------------------------------------------------------

    def join(self, session: Session, room: str) -> Subscription:
        """Subscribe in the joining state: live messages are buffered from now on."""
        sub = Subscription()
        session.subscriptions[room] = sub
        members = self._rooms.get(room)
        if members is None:
            members = self._rooms[room] = {}
        members[session] = sub
        return sub

    def leave(self, session: Session, room: str) -> bool:
        if session.subscriptions.pop(room, None) is None:
            return False
        members = self._rooms.get(room)
        if members is not None:
            members.pop(session, None)
            if not members:
                del self._rooms[room]
        return True

    def subscribers(self, room: str) -> Iterable[Session]:
        return self._rooms.get(room, ())

    def room_count(self) -> int:
        return len(self._rooms)

    # Fan-out ------------------------------------------------------------------

    def deliver(self, msg: ChatMessage) -> int:
        """One message to its room's subscribers (`deliver_batch` of one)."""
        return self.deliver_batch(msg.room, (msg,))

    def deliver_batch(self, room: str, msgs: Sequence[ChatMessage]) -> int:
        """Hand one room's new messages of a batch, in seq order, to every subscriber.

        The frames are encoded and joined once: every session that had none of
        them (all of them, but for a re-read) is given the same bytes, written
        at once unless something is queued for it already. That is one pass
        over the room and one write per session per batch, where queueing and
        then flushing touched every session twice: in a room of 2,500 the
        first pass alone took 4 ms, most of it cache misses (bench/analysis.md,
        big room). Returns the number of frames sent.
        """
        sessions = self._rooms.get(room)
        if not sessions or not msgs:
            return 0
        first_seq = msgs[0].seq
        last_seq = msgs[-1].seq
        data: bytes | None = None
        sent = 0
        for session, sub in sessions.items():
            if sub.joining or sub.held:
                sub.buffer.extend(msgs)
                if len(sub.buffer) > MAX_JOIN_BUFFER:
                    # History is taking too long for this room's traffic: the
                    # session resumes with `since` rather than grow without bound.
                    sub.buffer.clear()
                    session.close(1008, "too slow to join: resume with since")
            elif first_seq > sub.last_seq:
                if data is None:
                    data = b"".join([text_frame(m.frame_json()) for m in msgs])
                sub.last_seq = last_seq
                session.writer.send_now(data)
                sent += len(msgs)
            else:
                sent += _send_after(session, sub, msgs)  # a re-read it was partly given
        return sent

    def finish_join(self, session: Session, room: str, last_seq: int) -> None:
        """End the joining state: flush what the history reply did not cover."""
        sub = session.subscriptions.get(room)
        if sub is None:
            return
        sub.last_seq = max(sub.last_seq, last_seq)
        sub.joining = False
        if not sub.held:
            _flush(session, sub)

    def hold(self, session: Session, room: str) -> Subscription | None:
        """Buffer the room's live messages for this session until `release`.

        None if the session is not subscribed, or is held already (the first
        hold decides).
        """
        sub = session.subscriptions.get(room)
        if sub is None or sub.held:
            return None
        sub.held = True
        return sub

    def release(self, session: Session, room: str, sub: Subscription) -> None:
        """End a hold: what was buffered goes out, unless a join still waits for history."""
        if session.subscriptions.get(room) is not sub:
            return  # left, or subscribed again, meanwhile
        sub.held = False
        if not sub.joining:
            _flush(session, sub)

    def broadcast_event(self, room: str, payload: bytes, skip_user: str | None) -> None:
        """An ephemeral event (typing, receipt) to the room's subscribers."""
        sessions = self._rooms.get(room)
        if not sessions:
            return
        frame = text_frame(payload)
        for session, sub in sessions.items():
            if session.user != skip_user and not (sub.joining or sub.held):
                session.writer.send_frame(frame)


def _flush(session: Session, sub: Subscription) -> None:
    """What waited in the buffer, past what the session was given."""
    _send_after(session, sub, sub.buffer)
    sub.buffer.clear()


def _send_after(session: Session, sub: Subscription, msgs: Iterable[ChatMessage]) -> int:
    """Queue the messages past what the session was given; how many."""
    sent = 0
    for msg in msgs:
        if msg.seq > sub.last_seq:
            sub.last_seq = msg.seq
            session.writer.send_frame(text_frame(msg.frame_json()))
            sent += 1
    return sent
