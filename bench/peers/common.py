"""What every peer shares: the JWT check (HS256, the same secret as Parley's nodes)."""

from __future__ import annotations

import os

import jwt

SECRET = os.environ["BENCH_JWT_SECRET"]


class Unauthorized(Exception):
    """The token is missing, malformed, expired or wrongly signed."""


def user_of(token: object) -> str:
    """The `sub` of a valid token: HS256 only, `exp` and `sub` required (as Parley)."""
    if not isinstance(token, str):
        raise Unauthorized("no token")
    try:
        claims = jwt.decode(
            token, SECRET, algorithms=["HS256"], options={"require": ["exp", "sub"]}
        )
    except jwt.PyJWTError as exc:
        raise Unauthorized(str(exc)) from None
    return str(claims["sub"])
