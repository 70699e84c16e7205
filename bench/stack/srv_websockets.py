"""Variant C: websockets (new asyncio implementation) with websockets.broadcast()."""

from __future__ import annotations

import argparse
import asyncio

from common import add_server_args, keep_task, log_event, message_text, parse_control, run_with_loop
from websockets.asyncio.server import ServerConnection, broadcast
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed


async def serve(host: str, port: int, backlog: int) -> None:
    conns: set[ServerConnection] = set()
    tasks: set[asyncio.Task[None]] = set()

    async def run_broadcast(sender: ServerConnection, messages: int, burst: int) -> None:
        targets = [c for c in conns if c is not sender]
        log_event(f"broadcast {messages} x {len(targets)} burst {burst} start")
        for seq in range(messages):
            broadcast(targets, message_text(seq))
            if (seq + 1) % burst == 0:
                await asyncio.sleep(0)
        log_event("broadcast end")

    async def handler(ws: ServerConnection) -> None:
        conns.add(ws)
        try:
            async for msg in ws:
                if isinstance(msg, str) and (cmd := parse_control(msg)):
                    keep_task(tasks, run_broadcast(ws, *cmd))
        except ConnectionClosed:
            pass
        finally:
            conns.discard(ws)

    async with ws_serve(handler, host, port, compression=None, backlog=backlog) as server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_server_args(parser)
    args = parser.parse_args()
    run_with_loop(serve(args.host, args.port, args.backlog), args.loop)


if __name__ == "__main__":
    main()
