"""kredit_shared.auth on a small app of its own: the rule every route declares, tokens from a local
key and from an issuer's JWKS (served over HTTP on loopback), the workspace's cookie with its CSRF
token, the rate limit, and the audit trail of refusals and changes."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import APIRouter, FastAPI

from kredit_shared import auth
from kredit_shared.audit import AuditDep
from kredit_shared.auth import PUBLIC, PrincipalDep, RateLimiter, Role, require
from kredit_shared.service import ServiceRuntime
from kredit_shared.settings import ServiceSettings
from kredit_shared.testing import auth_header, serve


def settings(tmp_path: Path, **overrides) -> ServiceSettings:
    return ServiceSettings(
        service_name="auth-test",
        http_port=0,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}",
        **overrides,
    )


router = APIRouter()


@router.get("/open", dependencies=[PUBLIC])
async def open_route() -> dict:
    return {}


@router.get("/read", dependencies=[require(Role.viewer)])
async def read(principal: PrincipalDep) -> dict:
    return {"subject": principal.subject}


@router.post("/change", dependencies=[require(Role.collector)])
async def change(principal: PrincipalDep, audit: AuditDep) -> dict:  # records nothing itself
    return {"subject": principal.subject}


@router.get("/costly", dependencies=[require(Role.viewer, expensive=True)])
async def costly() -> dict:
    return {}


def app_of(tmp_path: Path, *routers: APIRouter, **overrides) -> FastAPI:
    runtime = ServiceRuntime(settings(tmp_path, **overrides), tables=[])
    return runtime.http_app("auth test", routers=list(routers))


def client_of(app: FastAPI) -> httpx.AsyncClient:
    """Without the lifespan (no broker): the rules run before any handler touches one."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


# --- every route declares a rule ---------------------------------------------------------------


def test_a_route_without_a_rule_is_named_and_the_service_refuses_to_start(tmp_path):
    forgotten = APIRouter()

    @forgotten.post("/api/v1/settlements")
    async def settle() -> dict:
        return {}

    app = app_of(tmp_path, router, forgotten)
    assert auth.rules_of(app)["POST /api/v1/settlements"] is None
    assert auth.rules_of(app)["GET /read"] == auth.Rule(Role.viewer)
    with pytest.raises(RuntimeError, match=r"routes without an access rule .*: POST /api/v1/settlements$"):
        auth.check_rules(app)


def test_a_router_wide_rule_covers_its_routes(tmp_path):
    readers = APIRouter(prefix="/api/v1/things", dependencies=[require(Role.viewer)])

    @readers.get("/{thing}")
    async def thing(thing: str) -> dict:
        return {}

    assert auth.rules_of(app_of(tmp_path, readers))["GET /api/v1/things/{thing}"] == auth.Rule(Role.viewer)


def test_the_openapi_has_the_bearer_scheme_and_documents_401_403_429(tmp_path):
    schema = app_of(tmp_path, router).openapi()
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": auth.BEARER.model.description,
    }
    operation = schema["paths"]["/change"]["post"]
    assert operation["security"] == [{"bearer": []}]
    assert {"401", "403", "429"} <= set(operation["responses"])
    assert "security" not in schema["paths"]["/healthz"]["get"] and "security" not in schema["paths"]["/open"]["get"]


# --- tokens ------------------------------------------------------------------------------------


async def test_local_tokens_carry_subject_and_roles_and_a_role_includes_the_lower_ones(tmp_path, signing_key):
    app = app_of(tmp_path, router)
    async with client_of(app) as client:
        assert (await client.get("/open")).status_code == 200
        assert (await client.get("/read")).status_code == 401
        answer = await client.get("/read", headers=auth_header(app, Role.accountant, subject="ann"))
        assert answer.json() == {"subject": "ann"}
        both = await client.get("/read", headers=auth_header(app, Role.admin, Role.collector, subject="bob"))
        assert both.status_code == 200  # admin and collector both include viewer


async def test_a_subject_with_control_characters_is_refused(tmp_path, signing_key):
    app = app_of(tmp_path, router)
    token = auth.mint_token(auth.read_local_key(signing_key), "ann\nadmin", [Role.viewer])
    async with client_of(app) as client:
        response = await client.get("/read", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401 and "control characters" in response.json()["detail"]


def test_the_local_run_writes_a_private_key_and_one_token_per_role(tmp_path):
    folder = auth.write_local_tokens(tmp_path)
    key_file = auth.local_key_file(tmp_path)
    assert key_file.stat().st_mode & 0o077 == 0
    key = auth.read_local_key(key_file)
    for role in Role:
        token_file = folder / f"{role.value}.token"
        assert token_file.stat().st_mode & 0o077 == 0
        claims = jwt.decode(token_file.read_text().strip(), key, algorithms=["HS256"], audience="kredit")
        assert (claims["sub"], claims["roles"], claims["iss"]) == (f"local-{role.value}", [role.value], "kredit-local")
    auth.write_local_tokens(tmp_path)
    assert auth.read_local_key(key_file) == key  # the key survives a restart; tokens pasted earlier stay valid


def test_no_key_and_no_issuer_stops_the_service_saying_what_to_set(tmp_path):
    with pytest.raises(auth.AuthConfigError, match="cannot read the token signing key .*make run"):
        app_of(tmp_path, router, auth_signing_key_file=tmp_path / "missing.key")
    with pytest.raises(auth.AuthConfigError, match="without AUTH_ISSUER"):
        app_of(tmp_path, router, auth_jwks_url="http://127.0.0.1:9/jwks")
    with pytest.raises(auth.AuthConfigError, match="public-key algorithms"):
        app_of(tmp_path, router, auth_jwks_url="http://127.0.0.1:9/jwks", auth_issuer="x", auth_algorithms="HS256")


@pytest.fixture
def issuer() -> Iterator[tuple[str, rsa.RSAPrivateKey]]:
    """An identity provider's JWKS endpoint on loopback, with one RSA key (kid "k1")."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())) | {"kid": "k1", "use": "sig"}
    body = json.dumps({"keys": [jwk]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/jwks", key
    finally:
        server.shutdown()
        server.server_close()


def idp_token(key, **claims) -> str:
    now = datetime.now(UTC)
    base = {"iss": "https://idp.example", "aud": "kredit", "sub": "ann", "iat": now, "exp": now + timedelta(hours=1)}
    return jwt.encode(base | claims, key, algorithm="RS256", headers={"kid": "k1"})


async def test_tokens_of_the_configured_issuer_are_verified_with_its_jwks(tmp_path, issuer):
    url, key = issuer
    app = app_of(tmp_path, router, auth_jwks_url=url, auth_issuer="https://idp.example", auth_roles_claim="realm.roles")
    assert not app.state.auth.local
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    async with client_of(app) as client:

        async def read(token: str) -> httpx.Response:
            return await client.get("/read", headers={"Authorization": f"Bearer {token}"})

        assert (await read(idp_token(key, realm={"roles": ["viewer"]}))).json() == {"subject": "ann"}
        assert (await read(idp_token(key, realm={"roles": ["viewer"]}, iss="https://evil"))).status_code == 401
        assert (await read(idp_token(other, realm={"roles": ["viewer"]}))).status_code == 401
        assert (await read(idp_token(key, realm={"roles": []}))).status_code == 403
        # The local key's tokens mean nothing once an issuer is configured (no HS256 with a JWKS).
        local = auth.mint_token(b"x" * 64, "mallory", [Role.admin])
        assert (await read(local)).status_code == 401


# --- the workspace's cookie --------------------------------------------------------------------


async def test_a_cookie_session_needs_the_csrf_token_to_change_anything(tmp_path, signing_key):
    app = app_of(tmp_path, router)
    token = app.state.auth.mint_local("ann", [Role.collector])
    async with client_of(app) as client:
        client.cookies.set(auth.SESSION_COOKIE, token)
        assert (await client.get("/read")).json() == {"subject": "ann"}  # reading needs no CSRF token
        refused = await client.post("/change")
        assert refused.status_code == 403 and "CSRF token" in refused.json()["detail"]
        stale = await client.post("/change", data={auth.CSRF_FIELD: auth.csrf_token("another session")})
        assert stale.status_code == 403
        form = await client.post("/change", data={auth.CSRF_FIELD: auth.csrf_token(token)})
        assert form.json() == {"subject": "ann"}
        header = await client.post("/change", headers={auth.CSRF_HEADER: auth.csrf_token(token)})
        assert header.json() == {"subject": "ann"}
        foreign = await client.post(
            "/change", headers={auth.CSRF_HEADER: auth.csrf_token(token), "Origin": "https://evil.example"}
        )
        assert foreign.status_code == 403 and "another origin" in foreign.json()["detail"]


# --- rate limits -------------------------------------------------------------------------------


def test_the_bucket_allows_a_burst_then_the_rate_and_says_when_to_retry():
    now = [0.0]
    limiter = RateLimiter({"write": (60, 3), "expensive": (0, 1)}, clock=lambda: now[0])
    assert [limiter.take("write", "ann") for _ in range(3)] == [None, None, None]
    assert limiter.take("write", "ann") == pytest.approx(1.0)  # 60 a minute: one a second
    assert limiter.take("write", "bob") is None  # per client
    now[0] += 1.0
    assert limiter.take("write", "ann") is None
    assert all(limiter.take("expensive", "ann") is None for _ in range(100))  # 0 a minute: no limit


async def test_over_the_limit_is_429_with_retry_after(tmp_path, signing_key):
    app = app_of(tmp_path, router, rate_limit_expensive_reads_per_minute=6, rate_limit_expensive_reads_burst=2)
    async with client_of(app) as client:
        ann, bob = auth_header(app, Role.viewer, subject="ann"), auth_header(app, Role.viewer, subject="bob")
        assert [(await client.get("/costly", headers=ann)).status_code for _ in range(2)] == [200, 200]
        limited = await client.get("/costly", headers=ann)
        assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 10
        assert "too many expensive reads from ann" in limited.json()["detail"]
        assert (await client.get("/costly", headers=bob)).status_code == 200
        assert (await client.get("/read", headers=ann)).status_code == 200  # an ordinary read is not limited


# --- CORS --------------------------------------------------------------------------------------


def test_cors_origins_must_be_exact(tmp_path):
    with pytest.raises(ValueError, match="not an origin"):
        settings(tmp_path, cors_origins="*")
    with pytest.raises(ValueError, match="not an origin"):
        settings(tmp_path, cors_origins="https://ar.example.com/app")
    assert settings(tmp_path, cors_origins="https://ar.example.com, http://localhost:5173").cors_origins == [
        "https://ar.example.com",
        "http://localhost:5173",
    ]


async def test_only_configured_origins_get_cors_headers(tmp_path, signing_key):
    app = app_of(tmp_path, router, cors_origins="https://ar.example.com")
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    async with client_of(app) as client:
        allowed = await client.options("/change", headers={"Origin": "https://ar.example.com"} | preflight)
        assert allowed.headers["access-control-allow-origin"] == "https://ar.example.com"
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in allowed.headers  # tokens in a header, no cookies
        other = await client.options("/change", headers={"Origin": "https://evil.example"} | preflight)
        assert "access-control-allow-origin" not in other.headers
        read = await client.get("/read", headers={"Origin": "https://evil.example"} | auth_header(app))
        assert "access-control-allow-origin" not in read.headers


# --- the audit trail ---------------------------------------------------------------------------


@pytest.fixture
async def served(tmp_path, kafka, signing_key) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    from kredit_shared.testing import isolated_kafka

    runtime = ServiceRuntime(settings(tmp_path, **isolated_kafka(kafka)), tables=[])
    app = runtime.http_app("auth test", routers=[router])
    async with serve(app) as client:
        yield app, client


async def test_refusals_and_unrecorded_changes_are_in_the_audit_trail(served):
    from kredit_shared.testing import eventually

    app, client = served
    viewer = auth_header(app, Role.viewer, subject="vera")
    assert (await client.post("/change", headers=viewer)).status_code == 403
    changed = await client.post(
        "/change", headers=auth_header(app, Role.collector, subject="colin") | {"X-Forwarded-For": "10.9.9.9"}
    )
    assert changed.status_code == 200
    assert (await client.get("/api/v1/audit", headers=viewer)).status_code == 403

    async def trail() -> list[dict]:
        response = await client.get("/api/v1/audit", headers=auth_header(app, Role.admin, subject="ada"))
        assert response.status_code == 200, response.text
        entries = response.json()["entries"]
        assert len(entries) == 3, entries
        return entries

    newest, change_row, refused = await eventually(trail)
    assert (refused["subject"], refused["status"], refused["path"]) == ("vera", 403, "/change")
    assert refused["action"].startswith("refused: this needs the role collector")
    assert (change_row["subject"], change_row["action"], change_row["status"]) == ("colin", "POST /change", 200)
    assert change_row["client"] == "127.0.0.1" and change_row["roles"] == ["collector"]
    assert (newest["subject"], newest["path"]) == ("vera", "/api/v1/audit")
    page = await client.get("/api/v1/audit", params={"limit": 1}, headers=auth_header(app, Role.admin))
    assert page.json()["next_before_id"] == page.json()["entries"][0]["id"]
    too_big = await client.get(
        "/api/v1/audit", params={"before_id": 2223287213463189323776}, headers=auth_header(app, Role.admin)
    )
    assert too_big.status_code == 422 and "before_id" in too_big.text


# --- the `kredit token` command ----------------------------------------------------------------


def test_kredit_token_mints_a_token_the_services_accept_and_says_what_is_wrong(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from kredit_shared.cli import app as cli

    monkeypatch.delenv("AUTH_SIGNING_KEY_FILE", raising=False)
    auth.write_local_tokens(tmp_path)
    runner = CliRunner()
    minted = runner.invoke(
        cli, ["token", "--role", "collector", "--role", "admin", "--subject", "ann", "--data-dir", str(tmp_path)]
    )
    assert minted.exit_code == 0, minted.output
    key = auth.read_local_key(auth.local_key_file(tmp_path))
    claims = jwt.decode(minted.output.strip(), key, algorithms=["HS256"], audience="kredit")
    assert (claims["sub"], claims["roles"], claims["iss"]) == ("ann", ["collector", "admin"], "kredit-local")
    assert claims["exp"] - claims["iat"] == 12 * 3600

    unknown = runner.invoke(cli, ["token", "--role", "boss", "--subject", "ann", "--data-dir", str(tmp_path)])
    assert unknown.exit_code == 2 and "unknown role boss" in unknown.output
    no_key = runner.invoke(cli, ["token", "--role", "viewer", "--subject", "ann", "--data-dir", str(tmp_path / "x")])
    assert no_key.exit_code == 1 and "cannot read the token signing key" in no_key.output
