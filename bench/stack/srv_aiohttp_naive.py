"""Variant A: aiohttp WebSocketResponse, `await ws.send_str(text)` per recipient."""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import WSMsgType, web
from common import (
    WS_PATH,
    add_server_args,
    keep_task,
    log_event,
    message_text,
    parse_control,
    run_with_loop,
)


async def serve(host: str, port: int, backlog: int) -> None:
    conns: set[web.WebSocketResponse] = set()
    tasks: set[asyncio.Task[None]] = set()

    async def broadcast(sender: web.WebSocketResponse, messages: int, burst: int) -> None:
        targets = [ws for ws in conns if ws is not sender]
        log_event(f"broadcast {messages} x {len(targets)} burst {burst} start")
        for seq in range(messages):
            text = message_text(seq)
            for ws in targets:
                try:
                    await ws.send_str(text)
                except ConnectionError:
                    pass
            if (seq + 1) % burst == 0:
                await asyncio.sleep(0)
        log_event("broadcast end")

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        conns.add(ws)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT and (cmd := parse_control(msg.data)):
                    keep_task(tasks, broadcast(ws, *cmd))
        finally:
            conns.discard(ws)
        return ws

    app = web.Application()
    app.router.add_get(WS_PATH, ws_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=backlog)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_server_args(parser)
    args = parser.parse_args()
    run_with_loop(serve(args.host, args.port, args.backlog), args.loop)


if __name__ == "__main__":
    main()
