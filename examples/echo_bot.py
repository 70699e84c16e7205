"""An echo bot on `parley.client`: it answers every message in its rooms with "echo: ...".

    # against a dev node (`make run`): the bot signs in as "echo" through /api/dev/token
    .venv/bin/python examples/echo_bot.py --url http://127.0.0.1:8000 --dev-user echo

    # against any node, with a token
    PARLEY_TOKEN=$(.venv/bin/parley token echo) .venv/bin/python examples/echo_bot.py --url ...

What it shows: a token provider (dev tokens are fetched again when they
expire), subscribing to every room the user is in (and to rooms that appear
later, found through the REST API), and an idempotent reply: the reply's
`client_id` is derived from the message it answers, so a bot that crashes and
sees the same message again after restarting cannot answer it twice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

from parley.client import Client, Connected, Message, NotMember, TokenProvider, dev_token

ROOM_POLL_S = 15.0


async def join_all(client: Client, rooms: tuple[str, ...] | list[str]) -> None:
    for room in rooms:
        if room not in client.subscriptions:
            with contextlib.suppress(NotMember):  # removed meanwhile
                await client.subscribe(room)


async def poll_rooms(client: Client) -> None:
    """Rooms the bot was added to after connecting (the protocol pushes no invitation)."""
    while True:
        await asyncio.sleep(ROOM_POLL_S)
        with contextlib.suppress(Exception):
            await join_all(client, [r.id for r in await client.rest.rooms()])


async def run_bot(client: Client, prefix: str = "echo: ") -> None:
    """Answer every message of others until the client stops."""
    await client.connect()
    poller = asyncio.create_task(poll_rooms(client))
    try:
        await join_all(client, client.rooms)
        async for event in client:
            if isinstance(event, Connected):
                await join_all(client, event.rooms)
            elif isinstance(event, Message) and event.sender != client.user:
                reply = (prefix + event.body)[:4096]
                # Not awaited here: the bot keeps reading while the ack is on its way.
                task = asyncio.create_task(
                    client.send(event.room, reply, client_id=f"echo-{event.id}")
                )
                task.add_done_callback(_log_failure)
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        await client.close()


def _log_failure(task: asyncio.Task[object]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logging.getLogger("echo_bot").warning("reply failed: %s", task.exception())


def token_for(args: argparse.Namespace) -> str | TokenProvider:
    if args.dev_user:
        url, user = args.url, args.dev_user
        return lambda: dev_token(url, user)
    tok: str | None = args.token or os.environ.get("PARLEY_TOKEN")
    if not tok:
        raise SystemExit("echo_bot: give --token (or PARLEY_TOKEN) or --dev-user")
    return tok


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default=os.environ.get("PARLEY_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", help="a JWT (default: PARLEY_TOKEN)")
    parser.add_argument("--dev-user", help="get a token for this user from a dev node")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    client = Client(args.url, token_for(args), device="echo-bot")
    bot = asyncio.create_task(run_bot(client))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, bot.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await bot


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
