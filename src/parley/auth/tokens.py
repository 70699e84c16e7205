"""Verify the JWT a client presents, and issue tokens for development.

The accepted algorithms are a fixed list from configuration, each bound to its
own key: a token's `alg` header only picks among them, never a key for another
algorithm, so `alg: none` and algorithm confusion (an HS256 token signed with
an RSA public key) are refused.
"""

from __future__ import annotations

import base64
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
from jwt.algorithms import Algorithm

from parley.protocol.names import is_user_id

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "PS256"})
_HMAC_DIGESTS = {"HS256": "sha256", "HS384": "sha384", "HS512": "sha512"}
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


class InvalidToken(Exception):
    """The token is missing, malformed, expired, not yet valid or wrongly signed.

    The message is safe to show to the client and to log: it never holds the token.
    """


@dataclass(slots=True, frozen=True)
class Identity:
    user: str
    name: str | None
    expires_at: int


@dataclass(slots=True, frozen=True)
class VerifierConfig:
    algorithms: tuple[str, ...]
    secret: str | None = None
    public_key: str | None = None  # PEM
    issuer: str | None = None
    audience: str | None = None
    leeway_s: int = 0


class _KeyedAlgorithm(Algorithm):
    """One accepted algorithm bound to its key, which is loaded and checked once.

    PyJWT prepares the key it is given again for every token (for HMAC it
    tries the secret as PEM, DER and JSON, a guard against algorithm
    confusion): a twentieth of a gateway's CPU in a connection storm. The
    same guard runs here, once, when the verifier is made. Bound to its key,
    the algorithm also lets one decode call pick the key by the token's
    `alg`, among the accepted ones only.
    """

    def __init__(self, inner: Algorithm, key: str) -> None:
        self._inner = inner
        self._key = inner.prepare_key(key)

    def prepare_key(self, key: object) -> object:
        return self._key

    def sign(self, msg: bytes, key: object) -> bytes:
        raise NotImplementedError("a verifier does not sign")

    def verify(self, msg: bytes, key: object, sig: bytes) -> bool:
        return self._inner.verify(msg, self._key, sig)

    def check_key_length(self, key: object) -> str | None:
        return self._inner.check_key_length(self._key)

    @staticmethod
    def to_jwk(key_obj: object, as_dict: bool = False) -> Any:
        raise NotImplementedError

    @staticmethod
    def from_jwk(jwk: object) -> object:
        raise NotImplementedError


class TokenVerifier:
    """Checks signature, `exp`, `nbf`, and `iss`/`aud` when configured."""

    def __init__(self, config: VerifierConfig, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock
        self._keys: dict[str, str] = {}
        for alg in config.algorithms:
            if alg in HMAC_ALGORITHMS:
                if not config.secret:
                    raise ValueError(f"algorithm {alg} needs a secret")
                self._keys[alg] = config.secret
            elif alg in ASYMMETRIC_ALGORITHMS:
                if not config.public_key:
                    raise ValueError(f"algorithm {alg} needs a public key")
                self._keys[alg] = config.public_key
            else:
                raise ValueError(f"algorithm {alg!r} is not supported")
        # A PyJWT of our own that knows only the accepted algorithms, each with its key.
        self._jwt = jwt.PyJWT()
        jws = self._jwt._jws
        for alg in jws.get_algorithms():
            jws.unregister_algorithm(alg)
        for alg, key in self._keys.items():
            jws.register_algorithm(alg, _KeyedAlgorithm(jwt.get_algorithm_by_name(alg), key))
        self._algorithms = list(self._keys)
        # The accepted HMAC algorithms, each keyed once (with the key PyJWT
        # prepared): a token's MAC starts from a copy, which spares OpenSSL
        # the digest's lookup that a one-shot hmac.digest makes every time.
        self._hmacs: dict[str, hmac.HMAC] = {
            alg: hmac.new(jws.get_algorithm_by_name(alg).prepare_key(key), None, _HMAC_DIGESTS[alg])
            for alg, key in self._keys.items()
            if alg in HMAC_ALGORITHMS
        }

    def verify(self, token: str | None) -> Identity:
        if not token:
            raise InvalidToken("missing token")
        # No cache of checked tokens: a usual token costs about 7 µs to check
        # (20 through PyJWT), and a cache entry about 800 bytes per connection.
        identity, nbf = self._check(token)
        # Time is checked on every use, against the injected clock.
        now = self._clock()
        leeway = self._config.leeway_s
        if now >= identity.expires_at + leeway:
            raise InvalidToken("token expired")
        if nbf is not None and now < nbf - leeway:
            raise InvalidToken("token not yet valid")
        return identity

    def _check(self, token: str) -> tuple[Identity, float | None]:
        """Signature and claims."""
        claims = self._plainly_valid(token)
        if claims is None:
            claims = self._decode(token)
        return _identity(claims)

    def _plainly_valid(self, token: str) -> dict[str, Any] | None:
        """The claims of an HMAC token that PyJWT would accept, checked without it.

        PyJWT's decode took 20 µs, this 6.5 (the signature is 2 µs of either):
        a tenth less gateway CPU per connection in a connect storm. Tokens as
        every client sends them (header `alg` and `typ` only, a valid
        signature, the claims in order) are accepted here; anything else,
        whatever is wrong with it, goes to PyJWT, so a refusal and its message
        are PyJWT's alone and nothing is accepted that PyJWT would refuse.
        """
        parts = token.split(".")
        if len(parts) != 3 or not all(_SEGMENT.fullmatch(part) for part in parts):
            return None
        try:
            header = orjson.loads(_b64decode(parts[0]))
            if not isinstance(header, dict) or not header.keys() <= {"alg", "typ"}:
                return None
            keyed = self._hmacs.get(header.get("alg"))  # type: ignore[arg-type]
            if keyed is None or not isinstance(header.get("typ", ""), str):
                return None
            mac = keyed.copy()
            mac.update(f"{parts[0]}.{parts[1]}".encode())
            if not hmac.compare_digest(mac.digest(), _b64decode(parts[2])):
                return None
            claims = orjson.loads(_b64decode(parts[1]))
        except (ValueError, TypeError):  # base64 and JSON errors: PyJWT names them
            return None
        if not isinstance(claims, dict) or claims.get("exp") is None:
            return None
        if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("jti", ""), str):
            return None
        issuer, audience = self._config.issuer, self._config.audience
        if issuer is not None and claims.get("iss") != issuer:
            return None
        if audience is not None:
            aud = claims.get("aud")
            if not aud or not (aud == audience or (isinstance(aud, list) and audience in aud)):
                return None
            if isinstance(aud, list) and not all(isinstance(a, str) for a in aud):
                return None
        return claims

    def _decode(self, token: str) -> dict[str, Any]:
        """Signature and iss/aud by PyJWT; raises InvalidToken with its reason."""
        # The token's `alg` picks its key among the accepted algorithms only (its
        # key is bound to it); signature, iss and aud by PyJWT; exp and nbf
        # against the injected clock (PyJWT only knows the wall clock). aud is
        # checked only when configured.
        options: dict[str, object] = {
            "require": ["exp", "sub"],
            "verify_iat": False,
            "verify_exp": False,
            "verify_nbf": False,
            "verify_aud": self._config.audience is not None,
        }
        try:
            claims = self._jwt.decode(
                token,
                "",  # each algorithm holds its own key
                algorithms=self._algorithms,
                issuer=self._config.issuer,
                audience=self._config.audience,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.InvalidAlgorithmError:
            raise InvalidToken("token algorithm not accepted") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("token audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("token issuer not accepted") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("token signature invalid") from None
        except jwt.DecodeError:
            raise InvalidToken("malformed token") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token: {type(exc).__name__}") from None
        return claims


def _b64decode(segment: str) -> bytes:
    """The bytes of a canonical base64url segment; ValueError for any other
    (PyJWT refuses one whose last character has spare bits set)."""
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != segment:
        raise ValueError("not canonical base64url")
    return raw


def _identity(claims: dict[str, Any]) -> tuple[Identity, float | None]:
    """The identity in checked claims, and `nbf`: exp and nbf are checked on every use."""
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise InvalidToken("token exp is not a number")
    if nbf is not None and not _is_number(nbf):
        raise InvalidToken("token nbf is not a number")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not is_user_id(sub):
        raise InvalidToken("token subject is not a valid user id")
    name = claims.get("name")
    identity = Identity(sub, name if isinstance(name, str) else None, int(exp))
    return identity, (None if nbf is None else float(nbf))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def issue_token(
    secret: str,
    user: str,
    ttl_s: int = 24 * 3600,
    *,
    name: str | None = None,
    issuer: str | None = None,
    audience: str | None = None,
    now: float | None = None,
) -> str:
    """An HS256 token, as `parley token` and the dev endpoint hand out."""
    if not is_user_id(user):
        raise ValueError(f"not a valid user id: {user!r}")
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {"sub": user, "iat": issued, "exp": issued + ttl_s}
    if name:
        claims["name"] = name
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")
