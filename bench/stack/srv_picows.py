"""Variant E: picows (Cython WebSocket library), transport.send per recipient."""

from __future__ import annotations

import argparse
import asyncio

from common import (
    WS_PATH,
    add_server_args,
    keep_task,
    log_event,
    message_text,
    parse_control,
    run_with_loop,
)
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server


async def serve(host: str, port: int, backlog: int) -> None:
    conns: set[WSTransport] = set()
    tasks: set[asyncio.Task[None]] = set()

    async def broadcast(sender: WSTransport, messages: int, burst: int) -> None:
        targets = [t for t in conns if t is not sender]
        log_event(f"broadcast {messages} x {len(targets)} burst {burst} start")
        for seq in range(messages):
            payload = message_text(seq).encode()
            for transport in targets:
                transport.send(WSMsgType.TEXT, payload)
            if (seq + 1) % burst == 0:
                await asyncio.sleep(0)
        log_event("broadcast end")

    class Listener(WSListener):
        def on_ws_connected(self, transport: WSTransport) -> None:
            conns.add(transport)

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                if cmd := parse_control(frame.get_payload_as_utf8_text()):
                    keep_task(tasks, broadcast(transport, *cmd))
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            conns.discard(transport)

    def factory(request: WSUpgradeRequest) -> WSListener | None:
        return Listener() if request.path == WS_PATH.encode() else None

    server = await ws_create_server(factory, host, port, backlog=backlog)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_server_args(parser)
    args = parser.parse_args()
    run_with_loop(serve(args.host, args.port, args.backlog), args.loop)


if __name__ == "__main__":
    main()
