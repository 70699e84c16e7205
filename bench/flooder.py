"""One abusive user for the flood scenario: sends far past its rate limit, for a while.

It writes `send` frames at a fixed rate (many times PARLEY_RATE_LIMIT) into a
room it shares with the measured users, reads whatever comes back (acks,
`rate_limited` errors), and when the server closes it (1008: it kept sending
through `rate_limited`) it connects again and goes on, as an attacker would.
At the end it prints one JSON line of counts. Its own rate is capped so that
on a 2-core machine it measures the server's defence, not a stolen core.

    python -m bench.flooder --url ws://127.0.0.1:8000/ws --token T --room R --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections import Counter

import aiohttp
import orjson


async def flood(url: str, token: str, room: str, rate: float, seconds: float) -> dict[str, int]:
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    seq = 0
    batch = max(1, int(rate / 100))  # frames per 10 ms tick
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                ws = await http.ws_connect(url, params={"token": token}, max_msg_size=0)
            except aiohttp.ClientError:
                counts["refused_handshakes"] += 1
                await asyncio.sleep(0.05)
                continue
            counts["connections"] += 1

            async def read(ws: aiohttp.ClientWebSocketResponse = ws) -> None:
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    frame = orjson.loads(msg.data)
                    kind = frame.get("type")
                    counts[f"{kind}:{frame.get('code')}" if kind == "error" else str(kind)] += 1

            reader = asyncio.create_task(read())
            next_t = time.monotonic()
            try:
                while not ws.closed and time.monotonic() < deadline:
                    for _ in range(batch):
                        frame = {"type": "send", "room": room, "client_id": f"f{seq}", "body": "x"}
                        await ws.send_str(orjson.dumps(frame).decode())
                        seq += 1
                        counts["sent"] += 1
                    next_t += batch / rate
                    await asyncio.sleep(max(0.0, next_t - time.monotonic()))
            except (ConnectionError, aiohttp.ClientError):
                pass
            if ws.close_code is not None:
                counts[f"closed:{ws.close_code}"] += 1
            with contextlib.suppress(Exception):
                await ws.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader, 2)
    return dict(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--rate", type=float, default=2000.0, help="frames per second")
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args()
    counts = asyncio.run(flood(args.url, args.token, args.room, args.rate, args.seconds))
    print(orjson.dumps(counts).decode(), flush=True)


if __name__ == "__main__":
    main()
