"""JWT verification: signatures, times, algorithms from configuration only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import warnings
from collections.abc import Callable

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.auth.tokens import Identity, InvalidToken, TokenVerifier, VerifierConfig, issue_token

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def pem_public(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, object], claims: dict[str, object], key: bytes | None) -> str:
    """A token signed by hand (PyJWT refuses to make the malicious ones)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = (
        b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    )
    return f"{signing_input}.{b64(signature)}"


def claims(**extra: object) -> dict[str, object]:
    now = int(time.time())
    return {"sub": "alice", "iat": now, "exp": now + 600, **extra}


def hs256(**extra: object) -> str:
    return jwt.encode(claims(**extra), SECRET, algorithm="HS256")


def verifier(
    *, issuer: str | None = None, audience: str | None = None, leeway_s: int = 0
) -> TokenVerifier:
    config = VerifierConfig(
        ("HS256",), secret=SECRET, issuer=issuer, audience=audience, leeway_s=leeway_s
    )
    return TokenVerifier(config)


def refused(check: Callable[[], Identity], reason: str) -> None:
    with pytest.raises(InvalidToken, match=reason):
        check()


def test_a_good_hs256_token() -> None:
    token = hs256(name="Alice A.")
    identity = verifier().verify(token)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert identity == Identity("alice", "Alice A.", exp)


def test_issue_token_makes_tokens_the_verifier_accepts() -> None:
    now = time.time()
    token = issue_token(SECRET, "bob", 60, name="Bob", issuer="parley", audience="chat", now=now)
    v = verifier(issuer="parley", audience="chat")
    assert v.verify(token) == Identity("bob", "Bob", int(now) + 60)
    with pytest.raises(ValueError):
        issue_token(SECRET, "not a user")


def test_missing_and_malformed_tokens() -> None:
    v = verifier()
    refused(lambda: v.verify(None), "missing")
    refused(lambda: v.verify(""), "missing")
    refused(lambda: v.verify("not.a.jwt"), "malformed")
    refused(lambda: v.verify("abc"), "malformed")


def test_time_claims() -> None:
    v = verifier()
    refused(lambda: v.verify(hs256(exp=int(time.time()) - 5)), "expired")
    refused(lambda: v.verify(hs256(nbf=int(time.time()) + 3600)), "not yet valid")
    assert verifier(leeway_s=30).verify(hs256(exp=int(time.time()) - 5)).user == "alice"
    assert v.verify(hs256(nbf=int(time.time()) - 1)).user == "alice"


def test_required_claims_and_subject() -> None:
    v = verifier()
    no_exp = claims()
    del no_exp["exp"]
    refused(lambda: v.verify(jwt.encode(no_exp, SECRET, algorithm="HS256")), "invalid token")
    no_sub = claims()
    del no_sub["sub"]
    refused(lambda: v.verify(jwt.encode(no_sub, SECRET, algorithm="HS256")), "invalid token")
    refused(lambda: v.verify(hs256(sub="not a user id")), "subject")
    refused(lambda: v.verify(hs256(sub="x" * 65)), "subject")


def test_wrong_secret_is_refused() -> None:
    token = jwt.encode(claims(), "another-secret-of-sufficient-length!!", algorithm="HS256")
    refused(lambda: verifier().verify(token), "signature")
    good = hs256()
    tampered = good[:-4] + ("AAAA" if good[-4:] != "AAAA" else "BBBB")
    refused(lambda: verifier().verify(tampered), "signature")


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused(alg: str) -> None:
    token = forge({"alg": alg, "typ": "JWT"}, claims(), None)
    refused(lambda: verifier().verify(token), "algorithm not accepted")


def test_an_algorithm_not_configured_is_refused() -> None:
    token = jwt.encode(claims(), SECRET + "-384-bits-long-enough-for-it!", algorithm="HS384")
    refused(lambda: verifier().verify(token), "algorithm not accepted")


def test_rs256_with_a_public_key(rsa_key: rsa.RSAPrivateKey) -> None:
    v = TokenVerifier(VerifierConfig(("RS256",), public_key=pem_public(rsa_key)))
    token = jwt.encode(claims(name="R"), rsa_key, algorithm="RS256")
    assert v.verify(token).name == "R"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused(lambda: v.verify(jwt.encode(claims(), other, algorithm="RS256")), "signature")
    refused(lambda: v.verify(hs256()), "algorithm not accepted")


def test_es256_with_a_public_key(ec_key: ec.EllipticCurvePrivateKey) -> None:
    v = TokenVerifier(VerifierConfig(("ES256",), public_key=pem_public(ec_key)))
    assert v.verify(jwt.encode(claims(), ec_key, algorithm="ES256")).user == "alice"


def test_hs256_signed_with_the_public_key_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    """Algorithm confusion: the attacker knows the public key and signs HS256 with it."""
    pem = pem_public(rsa_key)
    token = forge({"alg": "HS256", "typ": "JWT"}, claims(), pem.encode())
    only_rsa = TokenVerifier(VerifierConfig(("RS256",), public_key=pem))
    refused(lambda: only_rsa.verify(token), "algorithm not accepted")
    both = TokenVerifier(VerifierConfig(("HS256", "RS256"), secret=SECRET, public_key=pem))
    refused(lambda: both.verify(token), "signature")


def test_issuer_and_audience_when_configured() -> None:
    v = verifier(issuer="parley", audience="chat")
    assert v.verify(hs256(iss="parley", aud="chat")).user == "alice"
    assert v.verify(hs256(iss="parley", aud=["other", "chat"])).user == "alice"
    refused(lambda: v.verify(hs256(iss="evil", aud="chat")), "issuer")
    refused(lambda: v.verify(hs256(iss="parley", aud="other")), "audience")
    refused(lambda: v.verify(hs256(aud="chat")), "invalid token")  # iss missing
    refused(lambda: v.verify(hs256(iss="parley")), "invalid token")  # aud missing


def test_issuer_and_audience_are_not_checked_when_not_configured() -> None:
    """PROTOCOL.md: `iss`/`aud` are "checked when configured"."""
    v = verifier()
    assert v.verify(hs256(iss="anyone")).user == "alice"
    assert v.verify(hs256(aud="some-api")).user == "alice"


def test_the_injected_clock_decides_expiry() -> None:
    """STYLE.md: auth has its clock injected; expiry must follow it, not the wall clock."""
    now = time.time()
    late = TokenVerifier(VerifierConfig(("HS256",), secret=SECRET), clock=lambda: now + 7200)
    refused(lambda: late.verify(hs256()), "expired")  # exp is now + 600


def test_the_injected_clock_decides_not_before() -> None:
    now = time.time()
    early = TokenVerifier(VerifierConfig(("HS256",), secret=SECRET), clock=lambda: now - 7200)
    refused(lambda: early.verify(hs256(nbf=int(now) - 60)), "not yet valid")


def test_configuration_is_checked_up_front() -> None:
    with pytest.raises(ValueError, match="secret"):
        TokenVerifier(VerifierConfig(("HS256",)))
    with pytest.raises(ValueError, match="public key"):
        TokenVerifier(VerifierConfig(("RS256",), secret=SECRET))
    with pytest.raises(ValueError, match="not supported"):
        TokenVerifier(VerifierConfig(("none",), secret=SECRET))


def test_a_verified_token_still_expires_and_matures_on_the_clock() -> None:
    """Signatures are checked once per token string; time is checked on every use."""
    now = [float(int(time.time()))]
    v = TokenVerifier(VerifierConfig(("HS256",), secret=SECRET), clock=lambda: now[0])
    token = hs256(exp=int(now[0]) + 10, nbf=int(now[0]) + 5)
    refused(lambda: v.verify(token), "not yet valid")
    now[0] += 5
    assert v.verify(token).user == "alice"
    assert v.verify(token).user == "alice"
    now[0] += 5
    refused(lambda: v.verify(token), "expired")
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    refused(lambda: v.verify(forged), "signature|invalid")


# The check without PyJWT (TokenVerifier._plainly_valid) -------------------------

_VALUES: list[object] = ["alice", "", "bad user!", 7, 1.5, None, True, [], ["chat"], {"a": 1}]


def _pick(draw: st.DrawFn, usual: object) -> object:
    """A claim or header value: mostly the usual one, else anything odd, or absent."""
    if draw(st.integers(0, 9)) < 8:
        return usual
    return draw(st.sampled_from([*_VALUES, _ABSENT]))


_ABSENT = object()


@st.composite
def tokens(draw: st.DrawFn) -> str:
    now = int(time.time())
    header = {
        "alg": _pick(draw, draw(st.sampled_from(["HS256", "HS384", "HS512", "RS256", "none"]))),
        "typ": _pick(draw, "JWT"),
    }
    if draw(st.booleans()):
        header[draw(st.sampled_from(["kid", "crit", "b64", "cty"]))] = _pick(draw, "x")
    body = {
        "sub": _pick(draw, "alice"),
        "exp": _pick(draw, now + 600),
        "nbf": _pick(draw, now - 5),
        "iss": _pick(draw, "parley"),
        "aud": _pick(draw, draw(st.sampled_from(["chat", ["x", "chat"], ["x"], "other"]))),
        "jti": _pick(draw, "j1"),
        "name": _pick(draw, "Alice"),
    }
    header = {k: v for k, v in header.items() if v is not _ABSENT}
    body = {k: v for k, v in body.items() if v is not _ABSENT}
    alg = header.get("alg")
    digest = {"HS384": hashlib.sha384, "HS512": hashlib.sha512}.get(str(alg), hashlib.sha256)
    key = draw(st.sampled_from([SECRET.encode()] * 3 + [b"another-secret-of-about-that-length!"]))
    head = b64(json.dumps(header).encode())
    payload = b64(json.dumps(body).encode())
    signature = b64(hmac.new(key, f"{head}.{payload}".encode(), digest).digest())
    token = f"{head}.{payload}.{signature}"
    damage = draw(st.sampled_from(["", "", "", "", "pad", "space", "segment", "cut", "char"]))
    if damage == "pad":
        token = f"{head}=.{payload}.{signature}"
    elif damage == "space":
        token = f" {token}"
    elif damage == "segment":
        token = f"{token}.{signature}"
    elif damage == "cut":
        token = token[: draw(st.integers(1, len(token) - 1))]
    elif damage == "char":
        i = draw(st.integers(0, len(token) - 1))
        token = token[:i] + draw(st.sampled_from("Aa_-.+/!é")) + token[i + 1 :]
    return token


def _outcome(v: TokenVerifier, token: str) -> tuple[str, object]:
    try:
        return "ok", v.verify(token)
    except InvalidToken as exc:
        return "refused", str(exc)


@settings(max_examples=1500, deadline=None)
@given(
    token=tokens(),
    issuer=st.sampled_from([None, "parley"]),
    audience=st.sampled_from([None, "chat"]),
)
def test_tokens_checked_without_pyjwt_get_pyjwts_answer(
    token: str, issuer: str | None, audience: str | None
) -> None:
    """Whatever a token holds, the answer (identity, or refusal and its reason)
    is the one PyJWT alone gives: the quick check accepts only what it would."""
    config = VerifierConfig(
        ("HS256", "HS384", "HS512"), secret=SECRET, issuer=issuer, audience=audience
    )
    quick = TokenVerifier(config)
    pyjwt_only = TokenVerifier(config)
    pyjwt_only._plainly_valid = lambda token: None  # type: ignore[method-assign]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _outcome(quick, token) == _outcome(pyjwt_only, token)


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_a_usual_token_is_checked_without_pyjwt(alg: str) -> None:
    """The quick check is the one taken (a connection storm's tokens), and it
    checks the signature itself."""
    secret = SECRET * 2  # long enough for HS512
    config = VerifierConfig((alg,), secret=secret, issuer="parley", audience="chat")
    v = TokenVerifier(config)

    def no_pyjwt(token: str) -> dict[str, object]:
        raise AssertionError("PyJWT was asked")

    v._decode = no_pyjwt  # type: ignore[method-assign]
    token = jwt.encode(claims(iss="parley", aud=["x", "chat"], name="Al"), secret, algorithm=alg)
    assert v.verify(token) == Identity("alice", "Al", claims()["exp"])  # type: ignore[arg-type]
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    with pytest.raises(AssertionError, match="PyJWT was asked"):
        v.verify(forged)  # a wrong signature is PyJWT's to refuse, with its reason


def test_a_signature_with_spare_bits_set_is_left_to_pyjwt() -> None:
    """base64url's last character carries spare bits: a sibling character decodes
    to the same signature, and PyJWT refuses it; so does the quick check."""
    v = verifier()
    token = hs256()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    sibling = token[:-1] + alphabet[last ^ 1]
    assert v._plainly_valid(token) is not None
    assert v._plainly_valid(sibling) is None
    refused(lambda: v.verify(sibling), "malformed token|signature")
