"""The OpenAPI 3.1 document of the REST API, served at /api/openapi.json."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/responses/Error"}
_ROOM_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Parley REST API", "version": "1"},
    "security": [{"bearer": []}],
    "paths": {
        "/api/rooms": {
            "post": {
                "summary": "Create a group room; the caller becomes a member and its owner",
                "requestBody": {"required": True, **_json(_ref("NewRoom"))},
                "responses": {
                    "201": {"description": "created", **_json(_ref("Room"))},
                    "400": _ERROR,
                    "401": _ERROR,
                    "409": _ERROR,
                },
            },
            "get": {
                "summary": "The caller's rooms, with head, last_read and unread",
                "responses": {
                    "200": {
                        "description": "rooms",
                        **_json({"type": "array", "items": _ref("RoomSummary")}),
                    },
                    "401": _ERROR,
                },
            },
        },
        "/api/rooms/{id}": {
            "get": {
                "summary": "One room (404 for non-members)",
                "parameters": [_ROOM_ID],
                "responses": {
                    "200": {"description": "room", **_json(_ref("Room"))},
                    "401": _ERROR,
                    "404": _ERROR,
                },
            }
        },
        "/api/rooms/{id}/members": {
            "post": {
                "summary": "Add a member (any member may add)",
                "parameters": [_ROOM_ID],
                "requestBody": {
                    "required": True,
                    **_json(
                        {
                            "type": "object",
                            "required": ["user"],
                            "properties": {"user": {"type": "string"}},
                        }
                    ),
                },
                "responses": {
                    "201": {"description": "added", **_json(_ref("Room"))},
                    "200": {"description": "already a member", **_json(_ref("Room"))},
                    "400": _ERROR,
                    "401": _ERROR,
                    "404": _ERROR,
                },
            }
        },
        "/api/rooms/{id}/members/{user}": {
            "delete": {
                "summary": "Remove a member (the owner, or the user themself)",
                "parameters": [
                    _ROOM_ID,
                    {"name": "user", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
                "responses": {
                    "204": {"description": "removed"},
                    "401": _ERROR,
                    "403": _ERROR,
                    "404": _ERROR,
                },
            }
        },
        "/api/rooms/{id}/messages": {
            "get": {
                "summary": "A history page: the newest `limit` with seq < before, oldest first",
                "parameters": [
                    _ROOM_ID,
                    {"name": "before", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
                    },
                ],
                "responses": {
                    "200": {"description": "page", **_json(_ref("History"))},
                    "400": _ERROR,
                    "401": _ERROR,
                    "404": _ERROR,
                },
            },
            "post": {
                "summary": "Send a message; idempotent on (sender, client_id)",
                "parameters": [_ROOM_ID],
                "requestBody": {"required": True, **_json(_ref("NewMessage"))},
                "responses": {
                    "201": {
                        "description": "the ack, once the message is durable in the log",
                        **_json(_ref("Ack")),
                    },
                    "400": _ERROR,
                    "401": _ERROR,
                    "404": _ERROR,
                    "413": _ERROR,
                    "429": _ERROR,
                    "503": _ERROR,
                },
            },
        },
        "/api/stats": {
            "get": {
                "summary": "Analytics of the rooms the caller owns (the analytics worker's counts)",
                "parameters": [
                    {
                        "name": "room",
                        "in": "query",
                        "description": "one room (403 unless its owner); default every owned room",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "minutes",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 10080,
                            "default": 60,
                        },
                    },
                ],
                "responses": {
                    "200": {"description": "counts per room and minute", **_json(_ref("Stats"))},
                    "400": _ERROR,
                    "401": _ERROR,
                    "403": _ERROR,
                    "404": _ERROR,
                },
            }
        },
        "/api/dev/token": {
            "post": {
                "summary": "A token for a user; served only by a node started with --dev",
                "security": [],
                "requestBody": {
                    "required": True,
                    **_json(
                        {
                            "type": "object",
                            "required": ["user"],
                            "properties": {"user": {"type": "string"}},
                        }
                    ),
                },
                "responses": {
                    "200": {
                        "description": "a token",
                        **_json({"type": "object", "properties": {"token": {"type": "string"}}}),
                    },
                    "400": _ERROR,
                    "404": {"description": "not a development node"},
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "security": [],
                "responses": {"200": {"description": "alive"}},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Ready when the log and the database answer",
                "security": [],
                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {"200": {"description": "text"}},
            }
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        "responses": {
            "Error": {
                "description": "an error",
                **_json(
                    {
                        "type": "object",
                        "properties": {
                            "error": {
                                "type": "object",
                                "properties": {
                                    "code": {
                                        "type": "string",
                                        "enum": [
                                            "unauthorized",
                                            "bad_request",
                                            "not_found",
                                            "conflict",
                                            "rate_limited",
                                            "internal",
                                            "forbidden",
                                            "too_large",
                                        ],
                                    },
                                    "message": {"type": "string"},
                                },
                            }
                        },
                    }
                ),
            }
        },
        "schemas": {
            "NewRoom": {
                "type": "object",
                "required": ["id"],
                "properties": {
                    "id": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
                    "name": {"type": "string"},
                    "members": {"type": "array", "items": {"type": "string"}},
                },
            },
            "Room": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "name": {"type": "string"},
                    "owner": {"type": ["string", "null"]},
                    "kind": {"type": "string", "enum": ["group", "dm"]},
                    "members": {"type": "array", "items": {"type": "string"}},
                },
            },
            "RoomSummary": {
                "allOf": [
                    _ref("Room"),
                    {
                        "type": "object",
                        "properties": {
                            "head": {"type": "integer"},
                            "last_read": {"type": "integer"},
                            "unread": {"type": "integer"},
                        },
                    },
                ]
            },
            "Message": {
                "type": "object",
                "properties": {
                    "room": {"type": "string"},
                    "id": {"type": "string"},
                    "seq": {"type": "integer"},
                    "sender": {"type": "string"},
                    "body": {"type": "string"},
                    "ts": {"type": "string", "format": "date-time"},
                    "client_id": {"type": "string"},
                },
            },
            "Stats": {
                "type": "object",
                "properties": {
                    "since": {"type": "string", "format": "date-time"},
                    "rooms": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "room": {"type": "string"},
                                "messages": {"type": "integer"},
                                "active_users": {"type": "integer"},
                                "latency_avg_ms": {"type": ["number", "null"]},
                                "minutes": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "minute": {"type": "string", "format": "date-time"},
                                            "messages": {"type": "integer"},
                                            "active_users": {"type": "integer"},
                                            "latency_avg_ms": {"type": ["number", "null"]},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
            "History": {
                "type": "object",
                "properties": {
                    "room": {"type": "string"},
                    "messages": {"type": "array", "items": _ref("Message")},
                    "has_more": {"type": "boolean"},
                },
            },
            "NewMessage": {
                "type": "object",
                "required": ["client_id", "body"],
                "properties": {
                    "client_id": {"type": "string", "minLength": 1, "maxLength": 64},
                    "body": {"type": "string", "maxLength": 4096},
                },
            },
            "Ack": {
                "type": "object",
                "properties": {
                    "room": {"type": "string"},
                    "client_id": {"type": "string"},
                    "id": {"type": "string"},
                    "seq": {"type": "integer"},
                    "ts": {"type": "string", "format": "date-time"},
                },
            },
        },
    },
}
