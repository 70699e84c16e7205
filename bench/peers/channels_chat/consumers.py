"""The chat consumer: JWT from the query string, join a group, broadcast to it.

Frames (JSON text): client `{"type":"join","room":R}` → `{"type":"joined","room":R}`;
client `{"type":"send","room":R,"body":B}` → every member's
`{"type":"message","room":R,"sender":U,"body":B}` through `group_send`.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer
from common import Unauthorized, user_of


class ChatConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    async def connect(self) -> None:
        query = parse_qs(self.scope["query_string"].decode())
        try:
            self.user = user_of(query.get("token", [None])[0])
        except Unauthorized:
            await self.close(code=4401)
            return
        self.rooms: set[str] = set()
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for room in getattr(self, "rooms", ()):
            await self.channel_layer.group_discard(room, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            return
        frame = json.loads(text_data)
        room = frame.get("room")
        if frame.get("type") == "join" and isinstance(room, str):
            await self.channel_layer.group_add(room, self.channel_name)
            self.rooms.add(room)
            await self.send(text_data=json.dumps({"type": "joined", "room": room}))
        elif frame.get("type") == "send" and room in self.rooms:
            await self.channel_layer.group_send(
                room,
                {"type": "chat.message", "room": room, "sender": self.user, "body": frame["body"]},
            )

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send(
            text_data=json.dumps(
                {
                    "type": "message",
                    "room": event["room"],
                    "sender": event["sender"],
                    "body": event["body"],
                }
            )
        )
