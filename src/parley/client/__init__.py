"""An asyncio client for Parley, speaking only PROTOCOL.md over aiohttp.

    import asyncio
    from parley.client import Client, Message

    async def main() -> None:
        async with Client("http://127.0.0.1:8000", token="eyJ...") as client:
            await client.subscribe("general")
            ack = await client.send("general", "hello")
            async for event in client:
                if isinstance(event, Message):
                    print(f"{event.sender}: {event.body}")

    asyncio.run(main())

`Client` keeps one connection alive: it reconnects with jittered backoff,
resumes every subscribed room where it left off, de-duplicates by seq, and
resends unacked messages with their `client_id`, so a dropped connection
loses nothing and shows nothing twice. See `parley.client.client` for the
guarantees, `parley.client.events` for what comes out, and
`parley.client.errors` for what can go wrong. `client.rest` reaches the REST
API (rooms, members) with the same token.
"""

from parley.client.backoff import Backoff
from parley.client.client import Client
from parley.client.endpoints import Endpoints
from parley.client.errors import (
    BadRequest,
    ClientClosed,
    ClientError,
    Conflict,
    ConnectionReplaced,
    Forbidden,
    Internal,
    NotMember,
    ProtocolViolation,
    RateLimited,
    ServerError,
    TooLarge,
    Unauthorized,
)
from parley.client.events import (
    Ack,
    Connected,
    ConnectionState,
    Event,
    HistoryPage,
    Message,
    Presence,
    PresenceStatus,
    Receipt,
    Replaced,
    ServerErrorEvent,
    StateChanged,
    Subscribed,
    Subscription,
    Typing,
    Unsubscribed,
)
from parley.client.rest import RestClient, RoomInfo, RoomSummary, dev_token
from parley.client.tokens import TokenProvider, TokenSource

__all__ = [
    "Ack",
    "Backoff",
    "BadRequest",
    "Client",
    "ClientClosed",
    "ClientError",
    "Conflict",
    "Connected",
    "ConnectionReplaced",
    "ConnectionState",
    "Endpoints",
    "Event",
    "Forbidden",
    "HistoryPage",
    "Internal",
    "Message",
    "NotMember",
    "Presence",
    "PresenceStatus",
    "ProtocolViolation",
    "RateLimited",
    "Receipt",
    "Replaced",
    "RestClient",
    "RoomInfo",
    "RoomSummary",
    "ServerError",
    "ServerErrorEvent",
    "StateChanged",
    "Subscribed",
    "Subscription",
    "TokenProvider",
    "TokenSource",
    "TooLarge",
    "Typing",
    "Unauthorized",
    "Unsubscribed",
    "dev_token",
]
