"""Authentication on the WebSocket handshake and on REST, as PROTOCOL.md requires.

A refused WebSocket handshake is either an HTTP 401 (aiohttp raises
WSServerHandshakeError with status 401) or an accepted socket closed at once
with 4401, and never a `hello`. REST answers 401 with
`{"error": {"code": "unauthorized", ...}}`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.conftest import own_cluster
from tests.harness import SECRET, ServerProcess, token

OTHER_SECRET = "another-secret-that-is-not-the-servers-0123456789"
ROOT = Path(__file__).resolve().parents[2]


# Helpers ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def node_with(
    tmp_path: Path, name: str, drop: tuple[str, ...] = (), **extra: str
) -> AsyncIterator[ServerProcess]:
    """One embedded node with extra (or without some) PARLEY_* settings."""
    async with own_cluster("embedded", tmp_path, name=name, drop=drop, settings=extra) as cluster:
        yield cluster.nodes[0]


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """A node with the default configuration: HS256 with the harness secret."""
    async with node_with(tmp_path, "auth") as n:
        yield n


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(user: str = "alice", ttl: int = 3600, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": user, "iat": now, "exp": now + ttl, **extra}


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def unsigned(payload: dict[str, Any], alg: str = "none") -> str:
    """An `alg: none` token (PyJWT will not make one for a verifier that refuses it)."""
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64url(json.dumps(payload).encode())
    return f"{header}.{body}."


def hmac_signed(payload: dict[str, Any], key: bytes, alg: str = "HS256") -> str:
    """An HMAC token signed with any bytes as the key (e.g. a PEM public key)."""
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64url(json.dumps(payload).encode())
    signing_input = f"{header}.{body}".encode()
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    sig = hmac.new(key, signing_input, digest).digest()
    return f"{header}.{body}.{b64url(sig)}"


@dataclass
class Outcome:
    """What became of a WebSocket handshake."""

    hello: dict[str, Any] | None = None
    status: int | None = None  # the HTTP status of a refused handshake
    close_code: int | None = None  # the close code of an accepted, then closed, socket

    @property
    def refused(self) -> bool:
        return self.hello is None and (self.status == 401 or self.close_code == 4401)


async def ws_attempt(
    server: ServerProcess,
    tok: str | None,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> Outcome:
    query = dict(params or {})
    if tok is not None:
        query["token"] = tok
    async with aiohttp.ClientSession() as session:
        try:
            ws = await session.ws_connect(server.ws_url, params=query, headers=headers or {})
        except aiohttp.WSServerHandshakeError as exc:
            return Outcome(status=exc.status)
        try:
            msg = await ws.receive(5)
            if msg.type == aiohttp.WSMsgType.TEXT:
                frame: dict[str, Any] = orjson.loads(msg.data)
                if frame.get("type") == "hello":
                    # it works both ways: a ping gets a pong
                    await ws.send_str('{"type": "ping", "ref": "p"}')
                    while True:
                        reply = await ws.receive(5)
                        assert reply.type == aiohttp.WSMsgType.TEXT, reply
                        if orjson.loads(reply.data).get("type") == "pong":
                            break
                    return Outcome(hello=frame)
                # anything but hello must be followed by the close
                msg = await ws.receive(5)
            return Outcome(close_code=ws.close_code)
        finally:
            await ws.close()


async def assert_ws_refused(server: ServerProcess, tok: str | None, **kw: Any) -> None:
    outcome = await ws_attempt(server, tok, **kw)
    assert outcome.refused, outcome


async def assert_ws_accepted(
    server: ServerProcess, tok: str | None, user: str = "alice", **kw: Any
) -> None:
    outcome = await ws_attempt(server, tok, **kw)
    assert outcome.hello is not None, outcome
    assert outcome.hello["user"] == user


async def rest(
    server: ServerProcess,
    method: str,
    path: str,
    authorization: str | None,
    body: Any = None,
) -> tuple[int, Any]:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, server.url + path, json=body, headers=headers) as resp,
    ):
        text = await resp.text()
        try:
            return resp.status, orjson.loads(text)
        except orjson.JSONDecodeError:
            return resp.status, text


async def assert_rest_unauthorized(server: ServerProcess, authorization: str | None) -> None:
    for method, path, body in [
        ("GET", "/api/rooms", None),
        ("POST", "/api/rooms", {"id": f"r{uuid.uuid4().hex[:8]}"}),
        ("GET", "/api/rooms/general", None),
        ("GET", "/api/rooms/general/messages", None),
        ("POST", "/api/rooms/general/messages", {"client_id": "c", "body": "b"}),
        ("POST", "/api/rooms/general/members", {"user": "bob"}),
        ("DELETE", "/api/rooms/general/members/bob", None),
    ]:
        status, got = await rest(server, method, path, authorization, body)
        assert status == 401, (method, path, status, got)
        assert isinstance(got, dict), got
        assert got["error"]["code"] == "unauthorized", got
        assert isinstance(got["error"]["message"], str)


async def assert_rest_ok(server: ServerProcess, tok: str) -> None:
    status, got = await rest(server, "GET", "/api/rooms", f"Bearer {tok}")
    assert status == 200, got
    assert isinstance(got, list)


# Bad tokens, each on the socket and on REST ------------------------------------------------


def _expired() -> str:
    return hs256(claims(ttl=-60) | {"iat": int(time.time()) - 3600})


def _not_yet_valid() -> str:
    return hs256(claims(nbf=int(time.time()) + 600))


BAD_TOKENS: dict[str, Callable[[], str]] = {
    "malformed": lambda: "not-a-jwt",
    "malformed_three_parts": lambda: "abc.def.ghi",
    "garbage_base64": lambda: "eyJhbGciOiJIUzI1NiJ9.!!!.???",
    "expired": _expired,
    "nbf_in_future": _not_yet_valid,
    "other_secret": lambda: hs256(claims(), OTHER_SECRET),
    "alg_none": lambda: unsigned(claims()),
    "alg_None_capitalised": lambda: unsigned(claims(), alg="None"),
    "no_exp": lambda: hs256({"sub": "alice", "iat": int(time.time())}),
    "no_sub": lambda: hs256({"iat": int(time.time()), "exp": int(time.time()) + 3600}),
    "bad_sub": lambda: hs256(claims(user="not a user id!")),
    "long_sub": lambda: hs256(claims(user="u" * 65)),
    "empty_sub": lambda: hs256(claims(user="")),
    "exp_not_a_number": lambda: hs256({"sub": "alice", "exp": "tomorrow"}),
    "tampered": lambda: _tamper(token("alice")),
    "hs512_not_configured": lambda: hmac_signed(claims(), SECRET.encode(), "HS512"),
}


def _tamper(tok: str) -> str:
    """A valid token whose payload was changed to another user, signature kept."""
    header, _, sig = tok.split(".")
    body = b64url(json.dumps(claims(user="mallory")).encode())
    return f"{header}.{body}.{sig}"


async def test_no_token_is_refused(node: ServerProcess) -> None:
    await assert_ws_refused(node, None)
    await assert_ws_refused(node, "")
    await assert_rest_unauthorized(node, None)
    await assert_rest_unauthorized(node, "Bearer ")
    await assert_rest_unauthorized(node, "Basic YWxpY2U6c2VjcmV0")
    # a valid token in the query string is not how REST authenticates
    status, _ = await rest(node, "GET", f"/api/rooms?token={token('alice')}", None)
    assert status == 401


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
async def test_bad_token_is_refused(node: ServerProcess, kind: str) -> None:
    tok = BAD_TOKENS[kind]()
    await assert_ws_refused(node, tok)
    await assert_ws_refused(node, None, headers={"Authorization": f"Bearer {tok}"})
    await assert_rest_unauthorized(node, f"Bearer {tok}")
    # the good token still works on the same node (the refusal is about the token)
    await assert_ws_accepted(node, token("alice"))


async def test_refused_handshake_with_room_param_leaks_nothing(node: ServerProcess) -> None:
    outcome = await ws_attempt(node, _expired(), params={"room": "general", "since": "-1"})
    assert outcome.refused, outcome


async def test_valid_token_in_query_and_in_bearer_header(node: ServerProcess) -> None:
    await assert_ws_accepted(node, token("alice"))
    await assert_ws_accepted(node, token("bob"), user="bob")
    await assert_ws_accepted(
        node, None, user="carol", headers={"Authorization": f"Bearer {token('carol')}"}
    )
    await assert_rest_ok(node, token("alice"))
    # name claim, nbf in the past, iat: all fine
    now = int(time.time())
    tok = hs256(claims(name="Alice A.", nbf=now - 10))
    await assert_ws_accepted(node, tok)
    await assert_rest_ok(node, tok)


async def test_token_identity_is_the_sub_claim(node: ServerProcess) -> None:
    outcome = await ws_attempt(node, token("dave"))
    assert outcome.hello is not None and outcome.hello["user"] == "dave"
    status, room = await rest(
        node, "POST", "/api/rooms", f"Bearer {token('dave')}", {"id": "daves-room"}
    )
    assert status == 201, room
    assert "dave" in room["members"]


# HS256 when only RS256 is configured; RS256 and ES256 ----------------------------------------


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


async def test_rs256(tmp_path: Path) -> None:
    key, other = rsa_key(), rsa_key()
    pem = public_pem(key)
    async with node_with(
        tmp_path, "rs", PARLEY_JWT_PUBLIC_KEY=pem, PARLEY_JWT_ALGORITHMS="RS256"
    ) as n:
        good = jwt.encode(claims(), key, algorithm="RS256")
        await assert_ws_accepted(n, good)
        await assert_ws_accepted(n, None, headers={"Authorization": f"Bearer {good}"})
        await assert_rest_ok(n, good)
        bad = [
            jwt.encode(claims(), other, algorithm="RS256"),  # another key
            jwt.encode(claims(ttl=-10), key, algorithm="RS256"),  # expired
            token("alice"),  # HS256 with the secret the node also has: not configured
            hmac_signed(claims(), pem.encode()),  # HS256 keyed with the public key
            jwt.encode(claims(), key, algorithm="RS512"),  # right key, algorithm not configured
            jwt.encode(claims(), key, algorithm="PS256"),
            unsigned(claims()),
        ]
        for tok in bad:
            await assert_ws_refused(n, tok)
            await assert_rest_unauthorized(n, f"Bearer {tok}")


async def test_es256(tmp_path: Path) -> None:
    key, other = ec_key(), ec_key()
    pem = public_pem(key)
    async with node_with(
        tmp_path, "es", PARLEY_JWT_PUBLIC_KEY=pem, PARLEY_JWT_ALGORITHMS="ES256"
    ) as n:
        good = jwt.encode(claims(user="erin"), key, algorithm="ES256")
        await assert_ws_accepted(n, good, user="erin")
        await assert_rest_ok(n, good)
        bad = [
            jwt.encode(claims(), other, algorithm="ES256"),
            jwt.encode(claims(nbf=int(time.time()) + 600), key, algorithm="ES256"),
            token("alice"),
            hmac_signed(claims(), pem.encode()),
            jwt.encode(claims(), rsa_key(), algorithm="RS256"),
            unsigned(claims()),
        ]
        for tok in bad:
            await assert_ws_refused(n, tok)
            await assert_rest_unauthorized(n, f"Bearer {tok}")


async def test_public_key_from_a_file_without_a_secret(tmp_path: Path) -> None:
    """PARLEY_JWT_PUBLIC_KEY may be a path; without a secret, HS256 is simply not accepted."""
    key = rsa_key()
    pem_file = tmp_path / "public.pem"
    pem_file.write_text(public_pem(key))
    async with node_with(
        tmp_path,
        "rsfile",
        drop=("PARLEY_JWT_SECRET",),
        PARLEY_JWT_PUBLIC_KEY=str(pem_file),
        PARLEY_JWT_ALGORITHMS="RS256",
    ) as n:
        await assert_ws_accepted(n, jwt.encode(claims(), key, algorithm="RS256"))
        await assert_ws_refused(n, token("alice"))
        await assert_ws_refused(n, hmac_signed(claims(), pem_file.read_bytes()))


async def test_hs256_and_rs256_both_configured(tmp_path: Path) -> None:
    key = rsa_key()
    async with node_with(
        tmp_path, "both", PARLEY_JWT_PUBLIC_KEY=public_pem(key), PARLEY_JWT_ALGORITHMS="HS256,RS256"
    ) as n:
        await assert_ws_accepted(n, token("alice"))
        await assert_ws_accepted(n, jwt.encode(claims(), key, algorithm="RS256"))
        # algorithm confusion: HS256 keyed with the RSA public key
        await assert_ws_refused(n, hmac_signed(claims(), public_pem(key).encode()))
        await assert_ws_refused(n, jwt.encode(claims(), ec_key(), algorithm="ES256"))


# iss / aud --------------------------------------------------------------------------------


async def test_issuer_and_audience_are_checked_when_configured(tmp_path: Path) -> None:
    iss, aud = "https://login.example.test", "parley-api"
    async with node_with(tmp_path, "issaud", PARLEY_JWT_ISSUER=iss, PARLEY_JWT_AUDIENCE=aud) as n:
        good = hs256(claims(iss=iss, aud=aud))
        await assert_ws_accepted(n, good)
        await assert_rest_ok(n, good)
        # an aud list that contains ours is fine
        await assert_ws_accepted(n, hs256(claims(iss=iss, aud=["other", aud])))
        bad = {
            "neither": hs256(claims()),
            "no_iss": hs256(claims(aud=aud)),
            "no_aud": hs256(claims(iss=iss)),
            "wrong_iss": hs256(claims(iss="https://evil.example.test", aud=aud)),
            "wrong_aud": hs256(claims(iss=iss, aud="someone-else")),
            "both_wrong": hs256(claims(iss="x", aud="y")),
            "right_claims_wrong_key": hs256(claims(iss=iss, aud=aud), OTHER_SECRET),
        }
        for name, tok in bad.items():
            outcome = await ws_attempt(n, tok)
            assert outcome.refused, (name, outcome)
            await assert_rest_unauthorized(n, f"Bearer {tok}")


# tokens never in logs -----------------------------------------------------------------------


async def test_tokens_never_in_the_log(tmp_path: Path) -> None:
    async with node_with(tmp_path, "logs", PARLEY_LOG_LEVEL="DEBUG") as n:
        good = token("alice")
        header_tok = token("bob")
        expired = _expired()
        forged = hs256(claims(), OTHER_SECRET)
        await assert_ws_accepted(n, good, params={"room": "nope", "device": "d1"})
        await assert_ws_accepted(
            n, None, user="bob", headers={"Authorization": f"Bearer {header_tok}"}
        )
        await assert_ws_refused(n, expired)
        await assert_ws_refused(n, forged)
        await assert_rest_ok(n, good)
        await assert_rest_unauthorized(n, f"Bearer {expired}")
        await rest(n, "GET", f"/api/rooms?token={good}", None)
        await rest(n, "GET", f"/healthz?token={good}", None)
        await asyncio.sleep(0.5)
        log = n.output()
        assert "ready on http" in log  # the log is really there
        for tok in (good, header_tok, expired, forged):
            assert tok not in log
            # nor the signature or payload part alone
            for part in tok.split(".")[1:]:
                if len(part) > 20:
                    assert part not in log
    # and not at shutdown either
    log = n.output()
    for tok in (good, header_tok, expired, forged):
        assert tok.split(".")[2] not in log


# dev tokens ------------------------------------------------------------------------------------


async def test_dev_token_endpoint_is_404_without_dev_mode(node: ServerProcess) -> None:
    status, _ = await rest(node, "POST", "/api/dev/token", None, {"user": "alice"})
    assert status == 404
    status, _ = await rest(
        node, "POST", "/api/dev/token", f"Bearer {token('alice')}", {"user": "x"}
    )
    assert status == 404


async def test_dev_token_endpoint_in_dev_mode(tmp_path: Path) -> None:
    async with node_with(tmp_path, "dev", drop=("PARLEY_JWT_SECRET",), PARLEY_DEV="1") as n:
        status, body = await rest(n, "POST", "/api/dev/token", None, {"user": "alice"})
        assert status == 200, body
        tok = body["token"]
        assert isinstance(tok, str)
        await assert_ws_accepted(n, tok)
        await assert_rest_ok(n, tok)
        assert jwt.decode(tok, options={"verify_signature": False})["sub"] == "alice"
        # a bad user id is a bad request, not a token
        for bad in ({"user": "not valid!"}, {"user": ""}, {}, {"user": 5}):
            status, body = await rest(n, "POST", "/api/dev/token", None, bad)
            assert status == 400, (bad, body)
            assert body["error"]["code"] == "bad_request"


async def test_dev_mode_with_a_secret_signs_dev_tokens_with_it(tmp_path: Path) -> None:
    async with node_with(tmp_path, "devsecret", PARLEY_DEV="1") as n:
        status, body = await rest(n, "POST", "/api/dev/token", None, {"user": "bob"})
        assert status == 200, body
        await assert_ws_accepted(n, body["token"], user="bob")


# parley token ---------------------------------------------------------------------------------


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parley.cli.main",
        *args,
        env=env,
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(extra)
    return env


async def test_cli_token_prints_a_token_that_verifies(node: ServerProcess) -> None:
    code, out, err = await run_cli("token", "alice", env=cli_env(PARLEY_JWT_SECRET=SECRET))
    assert code == 0, err
    tok = out.strip()
    assert tok.count(".") == 2 and "\n" not in tok
    decoded = jwt.decode(tok, SECRET, algorithms=["HS256"])
    assert decoded["sub"] == "alice"
    assert 86400 - 120 <= decoded["exp"] - time.time() <= 86400 + 5
    await assert_ws_accepted(node, tok)
    await assert_rest_ok(node, tok)
    # --ttl
    code, out, err = await run_cli(
        "token", "bob", "--ttl", "60", env=cli_env(PARLEY_JWT_SECRET=SECRET)
    )
    assert code == 0, err
    short = jwt.decode(out.strip(), SECRET, algorithms=["HS256"])
    assert short["sub"] == "bob" and 0 < short["exp"] - time.time() <= 61
    await assert_ws_accepted(node, out.strip(), user="bob")
    # signed with another secret: refused by this node
    code, out, err = await run_cli("token", "alice", env=cli_env(PARLEY_JWT_SECRET=OTHER_SECRET))
    assert code == 0, err
    await assert_ws_refused(node, out.strip())


async def test_cli_token_needs_a_secret_and_a_valid_user() -> None:
    code, out, err = await run_cli("token", "alice", env=cli_env())
    assert code != 0
    assert "PARLEY_JWT_SECRET" in err + out
    code, out, _ = await run_cli("token", "not valid!", env=cli_env(PARLEY_JWT_SECRET=SECRET))
    assert code != 0
    assert out.strip() == "" or "." not in out.strip()
