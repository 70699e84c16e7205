"""Peer: python-socketio `AsyncServer` + `AsyncRedisManager`, served by aiohttp.

The chat job every system of the benchmark does: authenticate with a JWT (the
Socket.IO `auth` payload of the connect packet), join a room, broadcast a
message to the room. Configured as python-socketio's docs deploy an asyncio
server: `AsyncServer(async_mode="aiohttp", client_manager=AsyncRedisManager(url))`
attached to an aiohttp application run by `web.run_app`, one process per
port, every process on the same Redis channel. Logging off (the default),
default ping interval/timeout, default JSON serializer.

    python sio_redis.py --port 8101 --redis redis://127.0.0.1:6379/0 --channel bench
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import socketio
from aiohttp import web
from common import Unauthorized, user_of


def build(redis_url: str, channel: str) -> web.Application:
    mgr = socketio.AsyncRedisManager(redis_url, channel=channel)
    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=mgr)

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
        try:
            user = user_of(auth.get("token") if isinstance(auth, dict) else None)
        except Unauthorized as exc:
            raise socketio.exceptions.ConnectionRefusedError("unauthorized") from exc
        await sio.save_session(sid, {"user": user})

    @sio.event
    async def join(sid: str, room: str) -> None:
        await sio.enter_room(sid, room)
        await sio.emit("joined", room, to=sid)

    @sio.event
    async def send(sid: str, data: dict[str, Any]) -> None:
        room = data["room"]
        if room not in sio.rooms(sid):
            return  # only members broadcast, as in Parley
        session = await sio.get_session(sid)
        await sio.emit(
            "message", {"room": room, "sender": session["user"], "body": data["body"]}, room=room
        )

    app = web.Application()
    sio.attach(app)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/healthz", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--channel", default="socketio")
    args = parser.parse_args()
    app = build(args.redis, args.channel)
    import uvloop

    # uvloop, as aiohttp's docs suggest for speed: the peer gets every advantage offered.
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(app, host="127.0.0.1", port=args.port, backlog=4096, access_log=None, print=None)


if __name__ == "__main__":
    main()
