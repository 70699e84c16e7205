"""A gateway node: wires the log, the store and the hub together.

The path of a message: a session's `send` is produced to the messages topic
(keyed by room) without waiting; every node's tail reader hands it back in a
batch; `_on_messages` deduplicates it per room (RoomLogs), fans it out to the
local subscribers (Hub) and answers the pending `ack`s of its
(sender, client_id) with the first record of that send. The ack therefore
leaves only after the broker acknowledged the record (it was read back) and
carries the same id and seq on every node, for every retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import operator
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from parley.config import Settings
from parley.gateway import history
from parley.gateway.addresses import AddressLimits
from parley.gateway.backfill import Backfill
from parley.gateway.hub import Hub
from parley.gateway.latency import FanoutLatency
from parley.gateway.liveness import Liveness
from parley.gateway.membership import Membership
from parley.gateway.ratelimit import RateLimiter
from parley.gateway.roomlog import RoomLog, RoomLogs
from parley.gateway.roster import Roster
from parley.gateway.session import Session, Subscription
from parley.gateway.writer import Flusher
from parley.log.base import (
    Delivered,
    Log,
    LogRecord,
    LogUnavailable,
    TailReader,
    TopicSpec,
    partition_for,
)
from parley.log.records import (
    EVENT_PARTITIONS,
    Event,
    decode_event,
    decode_message,
    decode_removal,
    encode_message,
    encode_removal,
    events_spec,
    events_topic,
    messages_topic,
)
from parley.metrics import Metrics
from parley.presence import Presence
from parley.protocol.codes import CloseCode, ErrorCode
from parley.protocol.messages import Ack, ChatMessage, encode, history_frame, with_ref
from parley.storage.base import Room, RoomSummary, Store, StoreUnavailable
from parley.storage.batched import BatchedLookup

logger = logging.getLogger(__name__)

STARTUP_CATCHUP_S = 120.0
LAG_PROBE_S = 0.5
LATENCY_REPORT_S = 5.0
# How long a handshake waits for its device claim to land in the log. The
# hello goes out after it, so a connection made after that hello claims later
# in the log and wins; a broker too slow for this only weakens the order.
CLAIM_WAIT_S = 2.0
# How long a removal read from the log waits for the store to confirm it.
REMOVAL_CHECK_S = 5.0
REMOVAL_CHECKS = 5  # asked again while changes keep coming in; then the last answer holds
PRESENCE_BATCH = 500  # users in one presence record: about 10 KB


class NotMember(Exception):
    """Not a member, or no such room: one answer, so that room ids don't leak."""


@dataclass(slots=True)
class AckWaiter:
    on_ack: Callable[[Ack], None]
    on_error: Callable[[ErrorCode, str], None]


class Node:
    def __init__(self, settings: Settings, log: Log, store: Store, metrics: Metrics) -> None:
        self.settings = settings
        self.node_id = settings.node_id
        self.log = log
        self.store = store
        self.metrics = metrics
        self.hub = Hub()
        self.flusher = Flusher()
        self.rooms = RoomLogs(settings.room_window)
        self.membership = Membership(store)
        # A connect storm's room lists, one query for all who connect meanwhile.
        self.rooms_of: BatchedLookup[str, list[str]] = BatchedLookup(store.room_ids_of_users)
        self.presence = Presence(settings.presence_timeout_s)
        self.liveness = Liveness(settings.ping_interval_s)
        self.send_limiter = RateLimiter(settings.rate_per_s, settings.rate_burst)
        self.addresses = AddressLimits(settings)
        # A token replayed from many addresses escapes the per-address limit.
        self.user_handshakes = RateLimiter(
            settings.user_handshake_rate, settings.user_handshake_burst
        )
        self.messages_topic = messages_topic(settings.topic_prefix)
        self.events_topic = events_topic(settings.topic_prefix)
        self.partitions = settings.partitions
        self.event_partitions = EVENT_PARTITIONS
        # (room, sender, client_id) -> when it was produced, and who waits for its ack
        self._pending: dict[tuple[str, str, str], tuple[float, list[AckWaiter]]] = {}
        self._presence_out: list[tuple[str, str]] = []  # (user, status) not sent yet
        self.roster = Roster(store, self.hub, self.membership, settings.presence_max_room)
        self.backfill = Backfill(log, self.messages_topic, self.rooms)
        self.latency = FanoutLatency(metrics)
        self._readers: list[TailReader] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._ends: dict[int, int] = {}
        self._read_pos: dict[int, int] = {}
        self.caught_up = asyncio.Event()
        # user -> sessions opening, whose device claim is on its way to the log
        self._claiming: dict[str, list[Session]] = {}
        self._confirming: set[asyncio.Task[None]] = set()  # removals read, asking the store
        self.draining = False  # SIGTERM: /readyz answers 503 so balancers move away
        # WebSocket handlers running, from the upgrade on: stop() waits for each
        # to close (a session still opening is not in the hub yet).
        self.websockets = 0
        self.loop_lag_s = 0.0
        self._c_sent = metrics.counter("parley_messages_sent_total", "sends produced to the log")
        self._c_read = metrics.counter(
            "parley_messages_read_total", "new messages read from the log"
        )
        self._c_dup = metrics.counter(
            "parley_duplicate_records_total", "log records dropped as a retried send"
        )
        self._c_frames = metrics.counter(
            "parley_frames_delivered_total", "message frames queued to sessions"
        )
        metrics.gauge(
            "parley_sessions", "open WebSocket sessions", lambda: len(self.hub.all_sessions())
        )
        metrics.gauge(
            "parley_event_loop_lag_seconds",
            "how late the last 0.5 s timer fired (blocking work on the loop)",
            lambda: self.loop_lag_s,
        )
        metrics.gauge(
            "parley_pending_acks", "sends waiting for their record", lambda: len(self._pending)
        )
        metrics.gauge(
            "parley_idempotency_pairs", "(sender, client_id) pairs kept", lambda: self.rooms.pairs
        )

    # Lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        self.partitions = await self.log.ensure_topic(
            TopicSpec(self.messages_topic, self.settings.partitions, self.settings.log_retention_ms)
        )
        with contextlib.suppress(StoreUnavailable):
            # Before serving: how far the store reaches decides what backfill reads.
            self.rooms.set_persisted(await self.store.persisted(self.messages_topic))
        self.event_partitions = await self.log.ensure_topic(events_spec(self.settings.topic_prefix))
        now_ms = int(time.time() * 1000)
        # Read back the idempotency window: a retry of a send made before this
        # node started still finds its first record.
        reader = self.log.tail(
            self.messages_topic,
            now_ms - self.settings.idempotency_window_s * 1000,
            self._on_messages,
        )
        starts = await reader.start()
        for p, offset in starts.items():
            self.rooms.set_partition_start(p, offset)
        self._ends = {
            p: e for p, e in reader.end_offsets_at_start().items() if e > starts.get(p, 0)
        }
        self._readers.append(reader)
        if not self._ends:
            self.caught_up.set()
        events = self.log.tail(
            self.events_topic,
            now_ms - int(self.settings.presence_timeout_s * 1000),
            self._on_events,
        )
        await events.start()
        self._readers.append(events)
        self._tasks.append(asyncio.create_task(self._heartbeat_loop(), name="heartbeat"))
        self._tasks.append(asyncio.create_task(self._expire_loop(), name="expire"))
        self._tasks.append(asyncio.create_task(self._progress_loop(), name="progress"))
        self._tasks.append(asyncio.create_task(self.roster.run(), name="presence"))
        self._tasks.append(asyncio.create_task(self._loop_lag_loop(), name="loop-lag"))
        self._tasks.append(asyncio.create_task(self._latency_loop(), name="latency"))
        self._tasks.append(asyncio.create_task(self.liveness.run(), name="liveness"))
        try:
            await asyncio.wait_for(self.caught_up.wait(), STARTUP_CATCHUP_S)
        except TimeoutError:
            logger.warning(
                "still reading the log back after %.0f s; serving anyway", STARTUP_CATCHUP_S
            )

    async def drain(self, timeout_s: float) -> bool:
        """Wait (up to the timeout) for the sends in flight to get their ack or error."""
        deadline = time.monotonic() + timeout_s  # by the clock: a busy loop makes polls late
        for _ in range(max(1, int(timeout_s / 0.05))):
            if not self._pending or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)  # polled: acks arrive in batches, a wake-up each is waste
        return not self._pending

    async def stop(self) -> None:
        for session in self.hub.all_sessions():
            self.close_session(session, CloseCode.GOING_AWAY, "server going away")
        # Let the close handshakes finish, so that clients see 1001 (resume
        # elsewhere), not a dropped connection; a peer that does not answer
        # is aborted by its connection after 5 s.
        for _ in range(120):
            if not self.hub.all_sessions() and not self.websockets:
                break
            await asyncio.sleep(0.05)
        else:
            logger.warning(
                "%d sessions (%d connections) still open after the drain's close; dropped",
                len(self.hub.all_sessions()),
                self.websockets,
            )
        # Tell the others at once that this node's users are gone.
        self._send_presence()
        self._produce_event(Event("heartbeat", node=self.node_id))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for reader in self._readers:
            await reader.stop()
        while self._confirming:  # started by events read before the readers stopped
            pending = list(self._confirming)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _heartbeat_loop(self) -> None:
        interval = max(0.5, self.settings.presence_timeout_s / 3)
        while True:
            self._produce_event(
                Event("heartbeat", node=self.node_id, users=tuple(self.hub.users()))
            )
            await asyncio.sleep(interval)

    async def _loop_lag_loop(self) -> None:
        """How late a timer fires: the event loop's own measure of blocking work."""
        while True:
            started = time.monotonic()
            await asyncio.sleep(LAG_PROBE_S)
            self.loop_lag_s = max(0.0, time.monotonic() - started - LAG_PROBE_S)

    async def _latency_loop(self) -> None:
        """Report this node's fan-out latency per room to the analytics worker."""
        while True:
            await asyncio.sleep(LATENCY_REPORT_S)
            for room, values in self.latency.take().items():
                self._produce_event(
                    Event("fanout", room=room, node=self.node_id, values=tuple(values))
                )

    async def _progress_loop(self) -> None:
        """Follow how far the store holds the log, so windows trim only what it has."""
        while True:
            try:
                self.rooms.set_persisted(await self.store.persisted(self.messages_topic))
            except Exception:  # the store is down: keep the windows as they are
                logger.debug("persist progress unavailable", exc_info=True)
            await asyncio.sleep(0.5)

    async def _expire_loop(self) -> None:
        last_pairs = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            try:
                now = time.monotonic()
                self._expire_pending(now)
                self.roster.queue(self.presence.expire(now))
                if now - last_pairs > 60:
                    last_pairs = now
                    cutoff = int(time.time() * 1000) - self.settings.idempotency_window_s * 1000
                    self.rooms.expire(cutoff)
            except Exception:  # one bad round must not end presence or expiry for good
                logger.exception("expiry round failed")

    # Reading the log ------------------------------------------------------------

    def _on_messages(self, records: list[LogRecord]) -> None:
        self.flusher.hold_collector()  # no collection between a message's first frame and its last
        # Latency counts only live traffic, not the read-back at start-up.
        latency = self.latency if self.caught_up.is_set() else None
        now_ms = int(time.time() * 1000)
        # A room's new messages of the batch go out together, in one write per
        # session (Hub.deliver_batch); the acks after them, as before.
        fresh: dict[str, list[ChatMessage]] = {}
        acked: list[tuple[list[AckWaiter], Ack]] = []
        for rec in records:
            self._read_pos[rec.partition] = rec.offset + 1
            msg = decode_message(rec)
            if msg is None:
                self._on_removal_record(rec, fresh)
                continue
            first, new = self.rooms.add(msg, rec.partition)
            if new:
                self._c_read.value += 1
                room_msgs = fresh.get(msg.room)
                if room_msgs is None:
                    fresh[msg.room] = [msg]
                else:
                    room_msgs.append(msg)
                if latency is not None:
                    latency.observe(msg.room, now_ms - msg.ts_ms)
            elif first.seq != msg.seq:
                self._c_dup.value += 1
            pending = self._pending.pop((msg.room, msg.sender, msg.client_id), None)
            if pending is not None:
                acked.append((pending[1], first))
        for room, msgs in fresh.items():
            self._deliver(room, msgs)
        for waiters, first in acked:
            for waiter in waiters:
                waiter.on_ack(first)
        if not self.caught_up.is_set() and all(
            self._read_pos.get(p, 0) >= end for p, end in self._ends.items()
        ):
            self.caught_up.set()

    def _deliver(self, room: str, msgs: list[ChatMessage]) -> None:
        try:
            self._c_frames.value += self.hub.deliver_batch(room, msgs)
        except Exception:  # one room's failure must not cost the others, or the acks
            logger.exception("delivering to room %s failed", room)

    def _on_removal_record(self, rec: LogRecord, fresh: dict[str, list[ChatMessage]]) -> None:
        """A removal in its room's order: the room's earlier messages go out, then
        the user's deliveries stop, before any later message of the batch."""
        removal = decode_removal(rec)
        if removal is None:
            logger.warning("skipping a malformed record at %s/%s", rec.partition, rec.offset)
            return
        if removal.node == self.node_id or not self.caught_up.is_set():
            # Its own: applied when it was made (remove_member). Read back at
            # start-up: the store, read afresh, already knows it and any
            # re-add after it, which the events read back may not hold.
            return
        earlier = fresh.pop(removal.room, None)
        if earlier:
            self._deliver(removal.room, earlier)
        self._on_member_event(
            Event("member", room=removal.room, user=removal.user, status="removed")
        )

    def _on_events(self, records: list[LogRecord]) -> None:
        self.flusher.hold_collector()  # typing and receipts fan out to a whole room too
        now = time.monotonic()
        for rec in records:
            event = decode_event(rec)
            if event is None:
                continue
            if event.kind == "typing":
                self.hub.broadcast_event(
                    event.room,
                    encode({"type": "typing", "room": event.room, "user": event.user}),
                    event.user,
                )
            elif event.kind == "receipt":
                self.hub.broadcast_event(
                    event.room,
                    encode(
                        {
                            "type": "receipt",
                            "room": event.room,
                            "user": event.user,
                            "seq": event.seq,
                        }
                    ),
                    event.user,
                )
            elif event.kind == "presence":
                for user in event.presence_users():
                    self.roster.queue(self.presence.on_status(event.node, user, event.status, now))
            elif event.kind == "heartbeat":
                self.roster.queue(self.presence.on_heartbeat(event.node, event.users, now))
            elif event.kind == "member":
                if event.status == "removed" and event.node == self.node_id:
                    # Applied when it was made (remove_member): spare the
                    # store the question that would only confirm it.
                    self.membership.removal_read_back(event.room, event.user)
                    continue
                self._on_member_event(event)
            elif event.kind == "device":
                self._on_device_claim(event, rec.offset)

    # Sessions --------------------------------------------------------------------

    async def open_session(self, session: Session) -> None:
        """Register a new connection and greet it; raises StoreUnavailable."""
        rooms = await self.rooms_of.get(session.user)
        if session.device is not None:
            await self._claim_device(session)
            if session.closing:
                return  # replaced while its claim was on its way: never greeted
        first = self.hub.add(session)
        if first:
            self.roster.add_user(session.user, rooms)
        session.writer.send_json(
            encode(
                {
                    "type": "hello",
                    "user": session.user,
                    "session": session.id,
                    "rooms": rooms,
                    "server": self.node_id,
                }
            )
        )
        if first:
            self._presence_changed(session.user, "online")
        try:
            mates = await self.roster.mates(session.user, rooms)
        except StoreUnavailable:
            mates = set()  # presence is best effort; the session itself is fine
        for mate in sorted(mates):
            if self.presence.is_online(mate):
                session.writer.send_json(
                    encode({"type": "presence", "user": mate, "status": "online"})
                )

    def close_session(self, session: Session, code: int, reason: str) -> None:
        """Close a session from the server side (the connection does the rest)."""
        if session.closing:
            return
        session.closing = True
        session.close(code, reason)

    def session_closed(self, session: Session) -> None:
        if self.hub.remove(session):
            self.roster.remove_user(session.user)
            self._presence_changed(session.user, "offline")

    def _presence_changed(self, user: str, status: str) -> None:
        """A user's first session here opened, or their last closed: tell every node.

        A connect storm makes one change per connection; a record each costs
        the producer, the broker and every node's reader per record. The
        changes of one loop turn go out together, a record per run of one
        status (a node's presence records share a partition: order holds).
        """
        if not self._presence_out:
            asyncio.get_running_loop().call_soon(self._send_presence)
        self._presence_out.append((user, status))

    def _send_presence(self) -> None:
        changes, self._presence_out = self._presence_out, []
        for status, run in itertools.groupby(changes, key=operator.itemgetter(1)):
            users = tuple(user for user, _ in run)
            for start in range(0, len(users), PRESENCE_BATCH):
                batch = users[start : start + PRESENCE_BATCH]
                self._produce_event(
                    Event("presence", node=self.node_id, status=status, users=batch)
                )

    def _device_sessions(self, user: str, device: str) -> list[Session]:
        """The user's sessions on this node with this device, opening ones too."""
        return [
            s
            for s in (*self.hub.sessions_of(user), *self._claiming.get(user, ()))
            if s.device == device
        ]

    async def _claim_device(self, session: Session) -> None:
        """Replace this node's session of the device now, and claim it in the log.

        The claim's place in the log decides between sessions on different
        nodes: the later claim wins. Waiting for it to land before the hello
        makes that order the clients' order: a connection opened after this
        one's hello claims after it, even when this node's producer is slow
        (a retry, a busy core) and the other node's is not.
        """
        user, device = session.user, session.device
        assert device is not None
        for other in self._device_sessions(user, device):
            self.close_session(other, CloseCode.REPLACED, "replaced by a newer connection")
        future = self._produce_event(
            Event("device", user=user, device=device, session=session.id, node=self.node_id)
        )
        if future is None:
            session.claim_offset = -1  # not in the log: any claim read later is newer
            return
        opening = self._claiming.setdefault(user, [])
        opening.append(session)  # found by claims read before it joins the hub
        try:
            await asyncio.wait({future}, timeout=CLAIM_WAIT_S)
        finally:
            opening.remove(session)
            if not opening:
                del self._claiming[user]
        if future.done():
            _claim_landed(session, future)
        else:
            future.add_done_callback(lambda f: _claim_landed(session, f))

    def _on_device_claim(self, event: Event, offset: int) -> None:
        """Close the sessions of the device whose own claim is earlier in the log.

        A user's claims share a partition, read in order: a claim read while a
        session's own is still on its way is earlier than it, and loses.
        """
        for session in self._device_sessions(event.user, event.device):
            if session.id == event.session:
                session.claim_offset = offset
            elif session.claim_offset is not None and session.claim_offset < offset:
                self.close_session(session, CloseCode.REPLACED, "replaced by a newer connection")

    # Membership -----------------------------------------------------------------

    def _on_member_event(self, event: Event) -> None:
        """A membership change read from the log (made on another node)."""
        self.membership.changed(event.room, [event.user], added=event.status == "added")
        if event.status == "added":
            self.roster.joined(event.user, event.room)
            return
        sessions = list(self.hub.sessions_of(event.user))
        if not sessions:
            self.roster.left(event.user, event.room)  # nothing here can be undone
            return
        # The event may be older than a re-add this node's sessions already
        # saw in the store (subscribed since): it stops their messages at once,
        # and ends the subscriptions only if the store agrees.
        held = [(s, sub) for s in sessions if (sub := self.hub.hold(s, event.room)) is not None]
        task = asyncio.create_task(self._confirm_removal(event.room, event.user, held))
        self._confirming.add(task)
        task.add_done_callback(self._confirming.discard)

    async def _confirm_removal(
        self, room: str, user: str, held: list[tuple[Session, Subscription]]
    ) -> None:
        still = False  # in doubt, the removal stands
        try:
            for _ in range(REMOVAL_CHECKS):
                generation = self.membership.generation(room)
                still = await asyncio.wait_for(
                    self.membership.is_member(room, user), REMOVAL_CHECK_S
                )
                if not still or self.membership.generation(room) == generation:
                    break
                # A change came in while the store was asked (removed again?):
                # this answer may be older than it, so ask again.
        except (StoreUnavailable, TimeoutError):
            still = False
        except Exception:
            logger.exception("checking the removal of %s from %s failed; it stands", user, room)
            still = False
        finally:
            if not still:
                self.roster.left(user, room)
            for session, sub in held:
                if still:
                    self.hub.release(session, room, sub)
                elif session.subscriptions.get(room) is sub:
                    self._end_subscription(session, room)

    def _removed_here(self, room: str, user: str) -> None:
        """A removal this node committed: every session of the user leaves now."""
        self.membership.removed_here(room, user)
        self.roster.left(user, room)
        for session in self.hub.sessions_of(user):
            self._end_subscription(session, room)

    def _end_subscription(self, session: Session, room: str) -> None:
        sub = session.subscriptions.get(room)
        if sub is None:
            return
        self.hub.leave(session, room)
        if not sub.joining:  # a subscribe waiting for its history answers not_member itself
            session.writer.send_json(encode({"type": "unsubscribed", "room": room}))

    async def check_member(self, room: str, user: str) -> None:
        if not await self.membership.is_member(room, user):
            raise NotMember(room)

    async def create_room(self, room_id: str, name: str, owner: str, members: list[str]) -> Room:
        room = await self.store.create_room(room_id, name, owner, members)
        self._members_changed(room_id, room.members, "added")
        return room

    async def add_member(self, room_id: str, user: str) -> bool:
        added = await self.store.add_member(room_id, user)
        if added:
            self._members_changed(room_id, [user], "added")
        return added

    async def remove_member(self, room_id: str, user: str) -> bool:
        """Committed, then at once on this node; other nodes when they read it.

        The answer waits (briefly) until the removal is in the log twice: as a
        `member` event (membership caches; typing and receipts, which share
        its partition) and in the room's partition of the messages topic. So
        every node holds the user's deliveries before it reads any message
        sent after the answer, whichever node sent it.
        """
        removed = await self.store.remove_member(room_id, user)
        if removed:
            self._removed_here(room_id, user)
            delivered = self._members_changed(room_id, [user], "removed")
            in_order = self._produce_removal(room_id, user)
            if in_order is not None:
                delivered.append(in_order)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*delivered), 5)
        return removed

    def _members_changed(
        self, room: str, users: Sequence[str], status: str
    ) -> list[asyncio.Future[Delivered]]:
        """After a committed change: this node's cache now, every node's through the log."""
        self.membership.changed(room, users, added=status == "added")
        sent = []
        for user in users:
            future = self._produce_event(
                Event("member", room=room, user=user, status=status, node=self.node_id)
            )
            if future is not None:
                sent.append(future)
        return sent

    def _produce_removal(self, room: str, user: str) -> asyncio.Future[Delivered] | None:
        """The removal in the room's partition of the messages topic (records.Removal)."""
        partition = partition_for(room, self.partitions)
        value = encode_removal(user, self.node_id)
        what = f"removal of {user} from {room} (in the room's order)"
        return self._produce(self.messages_topic, partition, room, value, what)

    def _produce_event(self, event: Event) -> asyncio.Future[Delivered] | None:
        key = event.key()
        partition = partition_for(key, self.event_partitions)
        return self._produce(
            self.events_topic, partition, key, event.encode(), f"event {event.kind}"
        )

    def _produce(
        self, topic: str, partition: int, key: str, value: bytes, what: str
    ) -> asyncio.Future[Delivered] | None:
        """A best-effort record: None (logged) when the log cannot take it now."""
        try:
            future = self.log.produce(topic, partition, key, value)
        except LogUnavailable as exc:
            logger.warning("%s not sent: %s", what, exc)
            return None
        future.add_done_callback(_event_delivered)
        return future

    # Sending --------------------------------------------------------------------

    def send(self, user: str, room: str, client_id: str, body: str, waiter: AckWaiter) -> None:
        """Produce a message without waiting; the waiter hears the ack or an error.

        Membership was checked by the caller. A send whose (sender, client_id)
        this node already read is answered at once with the first record; one
        already in flight here waits for that record instead of producing again.
        """
        state = self.rooms.get(room)
        if state is not None:
            first = state.first(user, client_id)
            if first is not None:
                waiter.on_ack(first)
                return
        key = (room, user, client_id)
        waiting = self._pending.get(key)
        if waiting is not None:
            waiting[1].append(waiter)
            return
        value = encode_message(user, client_id, body, int(time.time() * 1000))
        try:
            future = self.log.produce(
                self.messages_topic, partition_for(room, self.partitions), room, value
            )
        except LogUnavailable as exc:
            waiter.on_error(ErrorCode.INTERNAL, f"{exc}; retry with the same client_id")
            return
        self._c_sent.value += 1
        self._pending[key] = (time.monotonic(), [waiter])
        future.add_done_callback(lambda f: self._on_produced(key, f))

    def _on_produced(self, key: tuple[str, str, str], future: asyncio.Future[Delivered]) -> None:
        if future.cancelled() or future.exception() is not None:
            self._fail_pending(key, "the log is unavailable; retry with the same client_id")

    def _fail_pending(self, key: tuple[str, str, str], message: str) -> None:
        _, waiters = self._pending.pop(key, (0.0, []))
        for waiter in waiters:
            waiter.on_error(ErrorCode.INTERNAL, message)

    def _expire_pending(self, now: float) -> None:
        """Answer sends whose record was never read back (the reader stalled)."""
        limit = self.settings.kafka_timeout_ms / 1000 + 5.0
        stale = [key for key, (since, _) in self._pending.items() if now - since > limit]
        for key in stale:
            self._fail_pending(key, "no confirmation from the log; retry with the same client_id")

    async def send_and_wait(self, user: str, room: str, client_id: str, body: str) -> Ack:
        """The REST flavour of send: wait for the ack (raises SendFailed)."""
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()

        def on_ack(msg: Ack) -> None:
            if not future.done():
                future.set_result(msg)

        def on_error(code: ErrorCode, message: str) -> None:
            if not future.done():
                future.set_exception(SendFailed(code, message))

        self.send(user, room, client_id, body, AckWaiter(on_ack, on_error))
        return await future

    # Reading history --------------------------------------------------------------

    def _room_log(self, room: str) -> RoomLog:
        return self.rooms.room(room, partition_for(room, self.partitions))

    async def page(
        self, room: str, before: int | None, limit: int
    ) -> tuple[list[ChatMessage], bool]:
        state = self._room_log(room)
        if before is None or before > self.rooms.persisted(partition_for(room, self.partitions)):
            await self._backfill(room, state, 0)
        return await history.page(
            self.store,
            state,
            room,
            before,
            limit,
            keep=min(self.settings.room_window, history.SMALL_ROOM),
        )

    async def resume(self, room: str, since: int) -> tuple[list[ChatMessage], bool]:
        state = self._room_log(room)
        await self._backfill(room, state, since + 1)
        return await history.resume(self.store, state, room, since, self.settings.replay_cap)

    async def _backfill(self, room: str, state: RoomLog, low: int) -> None:
        """Read from the log what neither the store nor the window holds yet."""
        try:
            await self.backfill.cover(room, self.partitions, state, low)
        except LogUnavailable as exc:
            raise StoreUnavailable(f"history is not available yet: {exc}") from None

    async def subscribe(
        self, session: Session, room: str, since: int | None, ref: str | None
    ) -> None:
        """Join a room: `subscribed`, `history`, then live messages, no gap, no duplicate.

        The session joins the hub first, in the joining state, so live
        messages read from now on wait in its buffer; the history is taken
        after (window snapshot first, same loop step), and the buffer is
        flushed past the last seq the history covered.
        """
        await self.check_member(room, session.user)
        if room in session.subscriptions:
            self.hub.leave(session, room)
        self.hub.join(session, room)
        # A removal read while the check awaited found no subscription to end:
        # check again now that the session is joined (later removals end it).
        member = self.membership.cached(room, session.user)
        if member is None:
            member = await self.membership.is_member(room, session.user)
        if not member:
            self.hub.leave(session, room)
            raise NotMember(room)
        try:
            if since is not None:
                messages, has_more = await self.resume(room, since)
            else:
                messages, has_more = await self.page(room, None, 50)
            head = max(self._room_log(room).head, messages[-1].seq if messages else -1)
            if head < 0 and since is not None:
                # A resume may find nothing after `since` in a room whose last
                # message this node never read. An empty newest page says
                # already that the store has nothing below the window, and the
                # window nothing: an empty room costs no second query.
                head = await self.store.head(room)
        except StoreUnavailable:
            self.hub.leave(session, room)
            raise
        if room not in session.subscriptions:
            # Removed from the room meanwhile (the frames of one connection are
            # handled one at a time: it cannot have unsubscribed).
            raise NotMember(room)
        session.writer.send_json(
            encode(with_ref({"type": "subscribed", "room": room, "head": head}, ref))
        )
        session.writer.send_json(history_frame(room, messages, has_more, ref))
        last = messages[-1].seq if messages else (since if since is not None else -1)
        self.hub.finish_join(session, room, last)

    def unsubscribe(self, session: Session, room: str) -> None:
        self.hub.leave(session, room)

    # Ephemeral events ---------------------------------------------------------------

    def typing(self, user: str, room: str) -> bool:
        return self._produce_event(Event("typing", room=room, user=user)) is not None

    async def read(self, user: str, room: str, seq: int) -> bool:
        await self.store.set_last_read(room, user, seq)
        return self._produce_event(Event("receipt", room=room, user=user, seq=seq)) is not None

    # REST views ------------------------------------------------------------------

    async def summaries(self, user: str) -> list[RoomSummary]:
        """Rooms with head and unread, counting what the store has not written yet."""
        out = []
        for s in await self.store.summaries(user):
            state = self.rooms.get(s.room.id)
            head, unread = s.head, s.unread
            if state is not None and state.head > head:
                fresh = state.after(max(head, s.last_read))
                unread += sum(1 for m in fresh if m.sender != user)
                head = state.head
            out.append(RoomSummary(s.room, head, s.last_read, unread))
        return out

    async def ready(self) -> dict[str, bool]:
        log_ok, store_ok = await asyncio.gather(self.log.ping(), self.store.ping())
        return {
            "log": log_ok,
            "database": store_ok,
            "caught_up": self.caught_up.is_set(),
            "accepting": not self.draining,
        }


def _claim_landed(session: Session, future: asyncio.Future[Delivered]) -> None:
    if session.claim_offset is not None:
        return  # read back from the log first
    if future.cancelled() or future.exception() is not None:
        session.claim_offset = -1
    else:
        session.claim_offset = future.result().offset


def _event_delivered(future: asyncio.Future[Delivered]) -> None:
    """Events are best effort: a lost typing event is not worth an error frame."""
    if not future.cancelled() and future.exception() is not None:
        logger.debug("event not delivered: %s", future.exception())


class SendFailed(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def new_session_id() -> str:
    return uuid.uuid4().hex
