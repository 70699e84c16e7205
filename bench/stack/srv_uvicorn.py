"""Variant D: uvicorn (httptools) + Starlette WebSocket, `send_text` per recipient."""

from __future__ import annotations

import argparse
import asyncio

import uvicorn
from common import WS_PATH, add_server_args, keep_task, log_event, message_text, parse_control
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

conns: set[WebSocket] = set()
tasks: set[asyncio.Task[None]] = set()


async def broadcast(sender: WebSocket, messages: int, burst: int) -> None:
    targets = [ws for ws in conns if ws is not sender]
    log_event(f"broadcast {messages} x {len(targets)} burst {burst} start")
    for seq in range(messages):
        text = message_text(seq)
        for ws in targets:
            try:
                await ws.send_text(text)
            except (WebSocketDisconnect, RuntimeError, ConnectionError):
                pass
        if (seq + 1) % burst == 0:
            await asyncio.sleep(0)
    log_event("broadcast end")


async def endpoint(ws: WebSocket) -> None:
    await ws.accept()
    conns.add(ws)
    try:
        while True:
            text = await ws.receive_text()
            if cmd := parse_control(text):
                keep_task(tasks, broadcast(ws, *cmd))
    except WebSocketDisconnect:
        pass
    finally:
        conns.discard(ws)


app = Starlette(routes=[WebSocketRoute(WS_PATH, endpoint)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_server_args(parser)
    parser.add_argument(
        "--ws", choices=("websockets", "websockets-sansio", "wsproto"), default="websockets"
    )
    args = parser.parse_args()
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        loop=args.loop,
        http="httptools",
        ws=args.ws,
        ws_per_message_deflate=False,
        lifespan="off",
        access_log=False,
        log_level="warning",
        backlog=args.backlog,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
