"""Peer: python-socketio `Server` + `KafkaManager`, the seed design.

`KafkaManager` exists only for the synchronous `Server` (kafka-python is a
blocking client), so this peer is deployed the way python-socketio's docs
deploy a synchronous server in production: gevent, under Gunicorn with one
gevent worker per process (`gunicorn -k gevent -w 1 sio_kafka:app`; the
docs allow only one worker per Gunicorn), WebSocket through simple-websocket
(engineio's gevent driver uses it when gevent-websocket is absent). Several
Gunicorns, one per port, share one Kafka topic (`SIO_CHANNEL`). The gevent
worker monkey-patches the standard library, which kafka-python needs.

    BENCH_JWT_SECRET=… SIO_KAFKA=127.0.0.1:9092 SIO_CHANNEL=bench \\
        gunicorn -k gevent -w 1 --worker-connections 30000 -b 127.0.0.1:8201 sio_kafka:app
"""

from __future__ import annotations

import os
from typing import Any

import socketio
from common import Unauthorized, user_of


class KafkaManager(socketio.KafkaManager):  # type: ignore[misc]
    """KafkaManager as shipped, but publishing bytes.

    python-socketio 5.18's KafkaManager hands `json.dumps(data)`, a str, to
    kafka-python's `send()`, which refuses anything but bytes ("Unsupported
    type for serialized value: <class 'str'>"): every broadcast fails. The
    one-line fix a user would make is `.encode()`; the rest is untouched
    (including the `producer.flush()` after every message).
    """

    def _publish(self, data: Any) -> None:
        self.producer.send(self.channel, value=self.json.dumps(data).encode())
        self.producer.flush()


mgr = KafkaManager(
    "kafka://" + os.environ.get("SIO_KAFKA", "127.0.0.1:9092"),
    channel=os.environ.get("SIO_CHANNEL", "socketio"),
)
sio = socketio.Server(async_mode="gevent", client_manager=mgr)


@sio.event
def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
    try:
        user = user_of(auth.get("token") if isinstance(auth, dict) else None)
    except Unauthorized as exc:
        raise socketio.exceptions.ConnectionRefusedError("unauthorized") from exc
    sio.save_session(sid, {"user": user})


@sio.event
def join(sid: str, room: str) -> None:
    sio.enter_room(sid, room)
    sio.emit("joined", room, to=sid)


@sio.event
def send(sid: str, data: dict[str, Any]) -> None:
    room = data["room"]
    if room not in sio.rooms(sid):
        return
    session = sio.get_session(sid)
    sio.emit("message", {"room": room, "sender": session["user"], "body": data["body"]}, room=room)


def _health(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


app = socketio.WSGIApp(sio, _health)
