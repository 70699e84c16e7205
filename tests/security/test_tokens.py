"""Token attacks beyond tests/e2e/test_auth.py: every one refused on the socket and on REST.

tests/e2e/test_auth.py covers the plain cases (alg none, another secret,
expired, nbf, the exact PEM as an HMAC key, iss/aud, a few bad subs). This
adds the variants attackers actually try: spellings of `none`, a `none`
header with a real signature, HS/RS and HS/ES confusion with every encoding
of the public key (PEM with and without its newline, CRLF, PKCS#1, DER, JWK)
on a node that accepts only the asymmetric algorithm and on one that accepts
both, keys smuggled in the header (`jwk`, `jku`, `x5u`, `x5c`, `kid`), edge
values of `exp`/`nbf`/`iss`/`aud`, and property-based `sub` values: a token
is accepted exactly when its `sub` is a user id of PROTOCOL.md's names table.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import own_cluster
from tests.e2e.test_auth import (
    assert_rest_unauthorized,
    assert_ws_accepted,
    assert_ws_refused,
    rest,
    ws_attempt,
)
from tests.harness import SECRET, ServerProcess

USER_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
ISSUER, AUDIENCE = "https://login.example.test", "parley-api"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(user: Any = "alice", ttl: int = 3600, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": user, "iat": now, "exp": now + ttl, **extra}


def forge(
    header: dict[str, Any] | str,
    payload: dict[str, Any] | Any,
    key: bytes | None,
    alg: str = "sha256",
) -> str:
    """A compact JWS with any header and payload, HMAC-signed with `key` (None: no signature)."""
    h = b64url((header if isinstance(header, str) else json.dumps(header)).encode())
    p = b64url(json.dumps(payload).encode())
    if key is None:
        return f"{h}.{p}."
    sig = hmac.new(key, f"{h}.{p}".encode(), getattr(hashlib, alg)).digest()
    return f"{h}.{p}.{b64url(sig)}"


async def assert_refused_everywhere(node: ServerProcess, tok: str, why: str) -> None:
    outcome = await ws_attempt(node, tok)
    assert outcome.refused, (why, outcome)
    outcome = await ws_attempt(node, None, headers={"Authorization": f"Bearer {tok}"})
    assert outcome.refused, (why, "header", outcome)
    await assert_rest_unauthorized(node, f"Bearer {tok}")


@pytest.fixture
async def hs_node(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    async with own_cluster("embedded", tmp_path, name="hs") as cluster:
        yield cluster.nodes[0]


# alg: none and other header tricks ---------------------------------------------------------

SECRET_KEY = SECRET.encode()
HEADER_TRICKS: dict[str, Callable[[], str]] = {
    "alg_NONE": lambda: forge({"alg": "NONE", "typ": "JWT"}, claims(), None),
    "alg_nOnE": lambda: forge({"alg": "nOnE"}, claims(), None),
    "alg_empty": lambda: forge({"alg": ""}, claims(), None),
    "alg_missing_unsigned": lambda: forge({"typ": "JWT"}, claims(), None),
    "alg_missing_signed": lambda: forge({"typ": "JWT"}, claims(), SECRET_KEY),
    "alg_null": lambda: forge({"alg": None}, claims(), SECRET_KEY),
    "alg_list": lambda: forge({"alg": ["HS256"]}, claims(), SECRET_KEY),
    "alg_lowercase": lambda: forge({"alg": "hs256"}, claims(), SECRET_KEY),
    "alg_with_space": lambda: forge({"alg": "HS256 "}, claims(), SECRET_KEY),
    # `none` in the header, yet a real HS256 signature: a verifier that picks the
    # algorithm from the header would skip the check
    "alg_none_with_a_valid_hs256_signature": lambda: forge({"alg": "none"}, claims(), SECRET_KEY),
    "hs256_without_signature": lambda: forge({"alg": "HS256"}, claims(), None),
    "hs256_signed_with_an_empty_key": lambda: forge({"alg": "HS256"}, claims(), b""),
    "hs256_signed_with_the_secrets_prefix": lambda: forge(
        {"alg": "HS256"}, claims(), SECRET_KEY[:-1]
    ),
    "header_not_an_object": lambda: forge('"HS256"', claims(), SECRET_KEY),
    "header_not_json": lambda: forge("{alg: HS256}", claims(), SECRET_KEY),
    "payload_an_array": lambda: forge({"alg": "HS256"}, [claims()], SECRET_KEY),
    "payload_a_string": lambda: forge({"alg": "HS256"}, "alice", SECRET_KEY),
    "four_segments": lambda: forge({"alg": "HS256"}, claims(), SECRET_KEY) + ".AAAA",
    "two_segments": lambda: forge({"alg": "HS256"}, claims(), SECRET_KEY).rsplit(".", 1)[0],
    "crit_extension_not_understood": lambda: forge(
        {"alg": "HS256", "crit": ["x-must-understand"], "x-must-understand": True},
        claims(),
        SECRET_KEY,
    ),
    "signature_of_another_token": lambda: (
        forge({"alg": "HS256"}, claims("mallory"), SECRET_KEY).rsplit(".", 1)[0]
        + "."
        + forge({"alg": "HS256"}, claims(), SECRET_KEY).rsplit(".", 1)[1]
    ),
}


async def test_header_and_signature_tricks_are_refused(hs_node: ServerProcess) -> None:
    for kind, make in HEADER_TRICKS.items():
        await assert_refused_everywhere(hs_node, make(), kind)
    # the node itself is fine: a proper token of the same shape works
    await assert_ws_accepted(hs_node, forge({"alg": "HS256", "typ": "JWT"}, claims(), SECRET_KEY))


# HS/RS and HS/ES confusion, with every encoding of the public key ---------------------------


def key_encodings(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> dict[str, bytes]:
    """Every form in which an attacker might find the server's public key."""
    pub = key.public_key()
    spki = pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forms = {
        "pem": spki,
        "pem_without_final_newline": spki.rstrip(b"\n"),
        "pem_with_crlf": spki.replace(b"\n", b"\r\n"),
        "der": pub.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "openssh": pub.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ),
        "jwk": (
            jwt.algorithms.RSAAlgorithm.to_jwk(pub)
            if isinstance(pub, rsa.RSAPublicKey)
            else jwt.algorithms.ECAlgorithm.to_jwk(pub)
        ).encode(),
    }
    if isinstance(pub, rsa.RSAPublicKey):
        forms["pkcs1_pem"] = pub.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
        )
        forms["pkcs1_der"] = pub.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.PKCS1
        )
        n = pub.public_numbers().n
        forms["modulus_bytes"] = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return forms


def confusion_tokens(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> dict[str, str]:
    out = {}
    for form, material in key_encodings(key).items():
        for alg, digest in (("HS256", "sha256"), ("HS384", "sha384"), ("HS512", "sha512")):
            out[f"{alg}_keyed_with_{form}"] = forge(
                {"alg": alg, "typ": "JWT"}, claims(), material, digest
            )
    return out


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.mark.parametrize(
    ("kind", "algorithms"),
    [("rsa", "RS256"), ("rsa", "HS256,RS256"), ("ec", "ES256"), ("ec", "HS256,ES256")],
)
async def test_hmac_keyed_with_the_public_key_is_refused(
    tmp_path: Path, kind: str, algorithms: str
) -> None:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )
    async with own_cluster(
        "embedded",
        tmp_path,
        name=f"{kind}-{algorithms.replace(',', '-')}",
        settings={"PARLEY_JWT_PUBLIC_KEY": public_pem(key), "PARLEY_JWT_ALGORITHMS": algorithms},
    ) as cluster:
        node = cluster.nodes[0]
        alg = "RS256" if kind == "rsa" else "ES256"
        # the real key works: the refusals below are about the algorithm
        await assert_ws_accepted(node, jwt.encode(claims(), key, algorithm=alg))
        for why, tok in confusion_tokens(key).items():
            await assert_refused_everywhere(node, tok, why)


async def test_keys_smuggled_in_the_header_are_ignored(tmp_path: Path) -> None:
    """jwk / jku / x5u / x5c / kid naming the attacker's own key: the configured key decides."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attacker_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(attacker.public_key()))
    attacker_der = attacker.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    async with own_cluster(
        "embedded",
        tmp_path,
        name="smuggle",
        settings={"PARLEY_JWT_PUBLIC_KEY": public_pem(key), "PARLEY_JWT_ALGORITHMS": "RS256"},
    ) as cluster:
        node = cluster.nodes[0]
        headers: dict[str, dict[str, Any]] = {
            "jwk": {"jwk": attacker_jwk},
            "jku": {"jku": "http://127.0.0.1:1/keys.json"},
            "x5u": {"x5u": "http://127.0.0.1:1/cert.pem"},
            "x5c": {"x5c": [base64.b64encode(attacker_der).decode()]},
            "kid_path": {"kid": "../../../../dev/null"},
            "kid_sql": {"kid": "x' UNION SELECT 'secret"},
        }
        for why, extra in headers.items():
            tok = jwt.encode(claims(), attacker, algorithm="RS256", headers=extra)
            await assert_refused_everywhere(node, tok, why)
        # the same headers on a token signed with the real key change nothing either
        tok = jwt.encode(
            claims(), key, algorithm="RS256", headers={"kid": "whatever", "jwk": attacker_jwk}
        )
        await assert_ws_accepted(node, tok)


# exp, nbf, iss, aud at their edges ----------------------------------------------------------


def hs(payload: dict[str, Any]) -> str:
    return forge({"alg": "HS256", "typ": "JWT"}, payload, SECRET_KEY)


def _time_claims() -> dict[str, str]:
    now = int(time.time())
    base = {"sub": "alice", "iat": now}
    return {
        "exp_now": hs({**base, "exp": now}),
        "exp_a_fraction_ago": hs({**base, "exp": time.time() - 0.5}),
        "exp_as_a_string": hs({**base, "exp": str(now + 3600)}),
        "exp_null": hs({**base, "exp": None}),
        "exp_true": hs({**base, "exp": True}),
        "exp_a_list": hs({**base, "exp": [now + 3600]}),
        "exp_negative": hs({**base, "exp": -1}),
        "nbf_in_a_minute": hs({**base, "exp": now + 3600, "nbf": now + 60}),
        "nbf_as_a_string": hs({**base, "exp": now + 3600, "nbf": str(now - 60)}),
        "nbf_true": hs({**base, "exp": now + 3600, "nbf": True}),
        "nbf_after_exp": hs({**base, "exp": now + 60, "nbf": now + 120}),
    }


async def test_exp_and_nbf_edges_are_refused(hs_node: ServerProcess) -> None:
    for why, tok in _time_claims().items():
        await assert_refused_everywhere(hs_node, tok, why)
    # and a token valid for one more minute is fine
    await assert_ws_accepted(hs_node, hs(claims(ttl=60, nbf=int(time.time()) - 1)))


async def test_iss_and_aud_edges_are_refused_when_configured(tmp_path: Path) -> None:
    async with own_cluster(
        "embedded",
        tmp_path,
        name="issaud",
        settings={"PARLEY_JWT_ISSUER": ISSUER, "PARLEY_JWT_AUDIENCE": AUDIENCE},
    ) as cluster:
        node = cluster.nodes[0]
        cases = {
            "iss_with_a_trailing_slash": claims(iss=ISSUER + "/", aud=AUDIENCE),
            "iss_in_upper_case": claims(iss=ISSUER.upper(), aud=AUDIENCE),
            "iss_as_a_list": claims(iss=[ISSUER], aud=AUDIENCE),
            "iss_null": claims(iss=None, aud=AUDIENCE),
            "iss_a_prefix": claims(iss=ISSUER[:-1], aud=AUDIENCE),
            "iss_ours_as_a_subdomain": claims(
                iss="https://login.example.test.evil.test", aud=AUDIENCE
            ),
            "aud_empty_list": claims(iss=ISSUER, aud=[]),
            "aud_null": claims(iss=ISSUER, aud=None),
            "aud_a_number": claims(iss=ISSUER, aud=5),
            "aud_a_prefix": claims(iss=ISSUER, aud=AUDIENCE[:-1]),
            "aud_with_a_suffix": claims(iss=ISSUER, aud=AUDIENCE + "-evil"),
            "aud_list_of_others": claims(iss=ISSUER, aud=["a", "b", "PARLEY-API"]),
            "aud_nested_list": claims(iss=ISSUER, aud=[[AUDIENCE]]),
        }
        for why, payload in cases.items():
            await assert_refused_everywhere(node, hs(payload), why)
        await assert_ws_accepted(node, hs(claims(iss=ISSUER, aud=AUDIENCE)))


# sub: exactly the user ids of PROTOCOL.md -----------------------------------------------------

ILLEGAL_SUBS = [
    "alice ",
    " alice",
    "alice\n",
    "alice\x00",
    "al ice",
    "\u0430lice",  # Cyrillic a
    "alice\u200b",  # zero-width space
    "ALİCE",
    "../alice",
    "alice/bob",
    "dm:alice:bob",
    "alice:bob",
    "alice@example.test",
    "u" * 65,
    "",
    "*",
    "%61lice",
    "alice;drop",
]


@pytest.fixture
async def sub_node(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    async with own_cluster("embedded", tmp_path, name="subs") as cluster:
        yield cluster.nodes[0]


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sub=st.one_of(
        st.sampled_from(ILLEGAL_SUBS),
        st.text(max_size=70),
        st.from_regex(USER_ID, fullmatch=True),
    )
)
@example(sub="u" * 64)
@example(sub="A.b_c-9")
async def test_a_token_is_accepted_exactly_when_sub_is_a_user_id(
    sub_node: ServerProcess, sub: str
) -> None:
    tok = hs(claims(sub))
    if USER_ID.fullmatch(sub):
        await assert_ws_accepted(sub_node, tok, user=sub)
        status, _ = await rest(sub_node, "GET", "/api/rooms", f"Bearer {tok}")
        assert status == 200, sub
    else:
        await assert_ws_refused(sub_node, tok)
        await assert_rest_unauthorized(sub_node, f"Bearer {tok}")


async def test_a_sub_that_is_not_a_string_is_refused(hs_node: ServerProcess) -> None:
    for sub in (5, 0, ["alice"], {"user": "alice"}, True, None, 1.5):
        await assert_refused_everywhere(hs_node, hs(claims(sub)), repr(sub))
