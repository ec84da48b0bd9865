"""Who may call what: bearer tokens (JWT) carrying roles, checked by one FastAPI dependency per route.

Every route declares its rule; a service refuses to start while a route has none:

    @router.post("/write-offs", dependencies=[require(Role.collector)])
    @router.get("/aged-balances", dependencies=[require(Role.viewer, expensive=True)])  # rate-limited read
    router = APIRouter(dependencies=[require(Role.viewer)])       # every route of a router
    @router.get("/signin", dependencies=[PUBLIC])                 # no token (probes, sign-in, static files)
    async def route(principal: PrincipalDep) -> ...               # who is calling (after the rule ran)

Roles (the token's `roles` claim): viewer ⊂ collector ⊂ accountant, and admin, which includes viewer
only. Admin configures (parameters, reason codes, setup-like endpoints) but does not move money:
whoever sets the rules is not the one who posts under them (separation of duties); a person who is
both gets both roles in the token.

Tokens are verified against the issuer's JWKS in production (AUTH_JWKS_URL, AUTH_ISSUER) or, for the
local run and the tests, against an HS256 key that `make run` generates under the data folder
(`<data>/auth/signing.key`; it also writes `<data>/tokens/<role>.token`, subject `local-<role>`).

The collections workspace keeps the token in a cookie (HttpOnly, SameSite=Strict) because its pages
are plain server-rendered forms; a request authenticated by that cookie that changes state must also
carry the CSRF token derived from it (`csrf_token`), and a foreign Origin is refused. The JSON API is
called with the Authorization header, which a browser never adds cross-site on its own.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

import jwt
from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.params import Depends as DependsParam
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kredit_shared.settings import ServiceSettings


class Role(StrEnum):
    viewer = "viewer"
    collector = "collector"
    accountant = "accountant"
    admin = "admin"


# What each role in a token lets its holder do (the role itself and the roles it includes).
GRANTS: dict[Role, frozenset[Role]] = {
    Role.viewer: frozenset({Role.viewer}),
    Role.collector: frozenset({Role.viewer, Role.collector}),
    Role.accountant: frozenset({Role.viewer, Role.collector, Role.accountant}),
    Role.admin: frozenset({Role.viewer, Role.admin}),
}
LOCAL_ISSUER = "kredit-local"
LOCAL_TOKEN_TTL = timedelta(days=30)
SESSION_COOKIE = "kredit_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_TOKEN_BYTES = 8192  # a JWT larger than this is refused before it is parsed
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Principal:
    """The verified caller: the token's subject and roles (the raw token is kept to call other services)."""

    subject: str
    roles: frozenset[Role]
    token: str

    @property
    def granted(self) -> frozenset[Role]:
        return frozenset().union(*(GRANTS[r] for r in self.roles))

    def may(self, role: Role) -> bool:
        return role in self.granted


def context(request: Any) -> dict[str, Any]:
    """What this request knows about its caller: `principal`, `rule`, `refusal`, `audited`. Kept in
    the request's own ASGI scope: `request.state` may be one dict shared by every request (it is the
    lifespan state under some servers and test harnesses)."""
    scope = getattr(request, "scope", request)
    return scope.setdefault("kredit", {})


def principal_of(request: Any) -> Principal | None:
    return context(request).get("principal")


# --- errors (answered as problem+json by kredit_shared.http) -----------------------------------


class Unauthorized(HTTPException):
    def __init__(self, detail: str, invalid: bool = False) -> None:
        challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
        super().__init__(401, detail, headers={"WWW-Authenticate": challenge})


class Forbidden(HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(403, detail)


class TooManyRequests(HTTPException):
    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__(429, detail, headers={"Retry-After": str(max(1, math.ceil(retry_after)))})


class AuthConfigError(Exception):
    """No usable way to verify tokens: the service does not start (the message says what to set)."""


# --- keys and tokens ---------------------------------------------------------------------------


def local_key_file(data_dir: Path) -> Path:
    return data_dir / "auth" / "signing.key"


def local_tokens_dir(data_dir: Path) -> Path:
    return data_dir / "tokens"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


def ensure_local_key(path: Path) -> Path:
    """Create the local HS256 key (64 random bytes, base64url) unless it exists; readable by its owner only."""
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(64) + "\n")
    return path


def read_local_key(path: Path) -> bytes:
    try:
        key = path.read_text().strip().encode()
    except OSError as e:
        raise AuthConfigError(
            f"cannot read the token signing key {path} ({e.strerror}); `make run` creates it, or set "
            f"AUTH_SIGNING_KEY_FILE, or AUTH_JWKS_URL and AUTH_ISSUER for an identity provider"
        ) from None
    if len(key) < 32:
        raise AuthConfigError(f"the token signing key {path} is too short (at least 32 characters)")
    return key


def mint_token(
    key: bytes,
    subject: str,
    roles: Iterable[Role | str],
    ttl: timedelta = timedelta(hours=12),
    issuer: str = LOCAL_ISSUER,
    audience: str = "kredit",
) -> str:
    """An HS256 token for the local key (the local run, the `kredit token` command, tests)."""
    now = datetime.now(UTC)
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "roles": [Role(r).value for r in roles],
        "iat": now,
        "exp": now + ttl,
    }
    return jwt.encode(claims, key, algorithm="HS256")


def write_local_tokens(data_dir: Path, audience: str = "kredit") -> Path:
    """The local run's contract: the key under `<data>/auth/`, and `<data>/tokens/<role>.token` with
    subject `local-<role>` for each role (rewritten at every start, so they never run out)."""
    key = read_local_key(ensure_local_key(local_key_file(data_dir)))
    folder = local_tokens_dir(data_dir)
    for role in Role:
        token = mint_token(key, f"local-{role.value}", [role], LOCAL_TOKEN_TTL, audience=audience)
        _write_private(folder / f"{role.value}.token", token + "\n")
    return folder


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


class TokenVerifier:
    """Checks signature, expiry, issuer and audience, and reads the subject and roles."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.audience = settings.auth_audience
        self.roles_claim = settings.auth_roles_claim
        self.leeway = settings.auth_leeway_seconds
        self._jwks: jwt.PyJWKClient | None = None
        self._key: bytes | None = None
        if settings.auth_jwks_url:
            if not settings.auth_issuer:
                raise AuthConfigError("AUTH_JWKS_URL is set without AUTH_ISSUER: name the issuer its tokens carry")
            unsafe = [a for a in settings.auth_algorithms if a.upper().startswith("HS") or a.lower() == "none"]
            if unsafe or not settings.auth_algorithms:
                raise AuthConfigError(f"AUTH_ALGORITHMS must be public-key algorithms with a JWKS, not {unsafe}")
            self._jwks = jwt.PyJWKClient(settings.auth_jwks_url, cache_keys=True, lifespan=300, timeout=5)
            self.issuer, self.algorithms = settings.auth_issuer, list(settings.auth_algorithms)
        elif settings.auth_signing_key_file is not None:
            self._key = read_local_key(settings.auth_signing_key_file)
            self.issuer, self.algorithms = settings.auth_issuer or LOCAL_ISSUER, ["HS256"]
        else:
            raise AuthConfigError("set AUTH_JWKS_URL and AUTH_ISSUER (or AUTH_SIGNING_KEY_FILE for a local key)")

    @property
    def local(self) -> bool:
        """True with the locally generated key: only then may the workspace mint tokens for sign-in."""
        return self._key is not None

    def mint_local(self, subject: str, roles: Iterable[Role], ttl: timedelta = timedelta(hours=12)) -> str:
        if self._key is None:
            raise RuntimeError("tokens are minted by the identity provider, not here")
        return mint_token(self._key, subject, roles, ttl, self.issuer, self.audience)

    async def verify(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthorized(f"the bearer token is longer than {MAX_TOKEN_BYTES} bytes", invalid=True)
        try:
            if self._jwks is not None:
                key: Any = (await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)).key
            else:
                key = self._key
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.PyJWKClientConnectionError:
            raise HTTPException(503, "the token issuer's keys cannot be fetched; try again shortly") from None
        except jwt.PyJWTError as e:
            raise Unauthorized(f"the bearer token is not valid: {e}", invalid=True) from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject.strip() or len(subject) > 200 or _CONTROLS.search(subject):
            raise Unauthorized(
                "the bearer token's subject (sub) must be 1 to 200 characters without control characters", invalid=True
            )
        raw = _claim(claims, self.roles_claim)
        names = raw.split() if isinstance(raw, str) else raw if isinstance(raw, list) else []
        roles = frozenset(Role(n) for n in names if isinstance(n, str) and n in Role.__members__)
        return Principal(subject, roles, token)


# --- rate limits -------------------------------------------------------------------------------

LimitKind = Literal["write", "expensive"]


class RateLimiter:
    """Token buckets per (kind, client), in this process: `burst` requests at once, refilled at
    `per_minute`. Replicas limit separately (a client gets N times the rate across N replicas)."""

    MAX_CLIENTS = 10_000

    def __init__(self, limits: dict[str, tuple[int, int]], clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits  # kind -> (per minute, burst)
        self.clock = clock
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> RateLimiter:
        return cls(
            {
                "write": (settings.rate_limit_writes_per_minute, settings.rate_limit_writes_burst),
                "expensive": (
                    settings.rate_limit_expensive_reads_per_minute,
                    settings.rate_limit_expensive_reads_burst,
                ),
            }
        )

    def take(self, kind: str, client: str) -> float | None:
        """None when the request may go ahead, else the seconds until it may."""
        per_minute, burst = self.limits[kind]
        if per_minute <= 0:
            return None
        now, rate = self.clock(), per_minute / 60
        tokens, then = self._buckets.pop((kind, client), (float(burst), now))
        tokens = min(float(burst), tokens + (now - then) * rate)
        if tokens < 1:
            self._buckets[(kind, client)] = (tokens, now)
            return (1 - tokens) / rate
        self._buckets[(kind, client)] = (tokens - 1, now)
        while len(self._buckets) > self.MAX_CLIENTS:  # the least recently seen client goes first
            self._buckets.popitem(last=False)
        return None


def limit(request: Request, kind: LimitKind, client: str) -> None:
    limiter: RateLimiter = request.app.state.rate_limiter
    if (wait := limiter.take(kind, client)) is not None:
        per_minute, burst = limiter.limits[kind]
        what = "requests that change state" if kind == "write" else "expensive reads"
        raise TooManyRequests(
            f"too many {what} from {client}: {per_minute} a minute (bursts of {burst}); retry in {math.ceil(wait)} s",
            wait,
        )


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# --- the rule every route declares -------------------------------------------------------------

BEARER = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    scheme_name="bearer",
    description="A JWT with a `roles` claim (viewer, collector, accountant, admin). The local run writes "
    "one per role to `<data folder>/tokens/<role>.token`; `kredit token --role collector --subject ann` mints others.",
)


@dataclass(frozen=True)
class Rule:
    role: Role
    expensive: bool = False  # a costly read: rate-limited like a write
    audited: bool = True  # False for a POST that changes nothing (e.g. a preview)


def csrf_token(token: str) -> str:
    """The CSRF token of a session: derived from the session's JWT, which a foreign page cannot read."""
    return base64.urlsafe_b64encode(hashlib.sha256(b"kredit-csrf\0" + token.encode()).digest())[:32].decode()


async def _check_cookie_request(request: Request, token: str) -> None:
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden(f"a request from the page of another origin ({origin}) is refused")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        sent = next(iter(parse_qs((await request.body()).decode(errors="replace")).get(CSRF_FIELD, [])), None)
    if sent is None or not hmac.compare_digest(sent, csrf_token(token)):
        raise Forbidden("the form's CSRF token is missing or stale: reload the page and try again")


async def authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    """The verified caller, from the Authorization header or else the workspace's session cookie."""
    if (principal := principal_of(request)) is not None:
        return principal
    token = credentials.credentials if credentials is not None else request.cookies.get(SESSION_COOKIE)
    if not token:
        raise Unauthorized(
            "this needs a bearer token (Authorization: Bearer <JWT>); the local run writes one per role to "
            "<data folder>/tokens/<role>.token"
        )
    verifier: TokenVerifier = request.app.state.auth
    principal = await verifier.verify(token)
    context(request)["principal"] = principal  # before the CSRF check: the audit trail records its refusal
    if credentials is None and request.method not in SAFE_METHODS:
        await _check_cookie_request(request, token)
    return principal


def require(role: Role, *, expensive: bool = False, audited: bool = True) -> DependsParam:
    """The dependency a route (or a router) declares: a token whose roles include `role`, else 401
    (no or invalid token) or 403 (the role is missing). Requests that change state, and `expensive`
    reads, are rate-limited per token subject (429 with Retry-After)."""
    rule = Rule(role, expensive, audited)

    async def check(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
    ) -> Principal:
        principal = await authenticate(request, credentials)
        context(request)["rule"] = rule
        if not principal.may(rule.role):
            limit(request, "write", principal.subject)  # each refusal is an audit row: bounded like a write
            has = ", ".join(sorted(principal.roles)) or "no role"
            raise Forbidden(
                f"this needs the role {rule.role.value} (or one that includes it); the token of "
                f"{principal.subject} has {has}"
            )
        if expensive or request.method not in SAFE_METHODS:
            limit(request, "expensive" if expensive else "write", principal.subject)
        return principal

    check.kredit_rule = rule  # type: ignore[attr-defined]  # found by rules_of()
    return Security(check)


def public(rate_limited: bool = False) -> DependsParam:
    """No token needed. `rate_limited`: a public route that changes state, limited per client address."""

    async def no_token_needed(request: Request) -> None:
        if rate_limited:
            limit(request, "write", client_address(request))

    no_token_needed.kredit_rule = "public"  # type: ignore[attr-defined]
    return Depends(no_token_needed)


PUBLIC = public()


def _current_principal(request: Request) -> Principal:
    principal = principal_of(request)
    if principal is None:  # a route that asks who is calling must also declare require(...)
        raise RuntimeError(f"{request.method} {request.url.path} reads the principal but declares no require(role)")
    return principal


PrincipalDep = Annotated[Principal, Depends(_current_principal)]


# --- every route has a rule --------------------------------------------------------------------


def rule_of(route: Any) -> Rule | Literal["public"] | None:
    """The rule a route declared (on itself or its router), or None."""
    pending = list(route.dependant.dependencies)
    while pending:
        dependency = pending.pop()
        if (rule := getattr(dependency.call, "kredit_rule", None)) is not None:
            return rule
        pending.extend(dependency.dependencies)
    return None


def rules_of(app: FastAPI) -> dict[str, Rule | Literal["public"] | None]:
    """ "METHOD /path" -> its rule, for every API route of the app (documentation pages excluded)."""
    # FastAPI includes routers lazily: the routes with their routers' dependencies are route contexts.
    return {
        f"{method} {route.path}": rule_of(route)
        for route in iter_route_contexts(app.routes)
        if isinstance(route.original_route, APIRoute)
        for method in sorted(route.methods or ())  # an APIRoute always has its methods
    }


def check_rules(app: FastAPI) -> None:
    """Refuse to serve an app with a route that declares no rule: a forgotten rule fails closed."""
    missing = [route for route, rule in rules_of(app).items() if rule is None]
    if missing:
        raise RuntimeError(
            "routes without an access rule (add dependencies=[require(Role.<role>)] or [PUBLIC]): " + ", ".join(missing)
        )


def roles_of(names: Sequence[str]) -> list[Role]:
    """Role names as typed by a person (the CLI, the sign-in page), each checked."""
    unknown = [n for n in names if n not in Role.__members__]
    if unknown:
        raise ValueError(f"unknown role {', '.join(unknown)} (roles: {', '.join(Role)})")
    return [Role(n) for n in names]
