"""An Entra ID-like token service for a simulated AKS with AAD integration.

It serves what azure-identity's client-secret and workload-identity credentials need from a custom
authority (the ``AZURE_AUTHORITY_HOST`` of a sovereign cloud or Azure Stack): the tenant's OpenID
metadata and the client-credentials grant. It knows one tenant, one service principal with a secret,
and the scenario's applications, which sign in with a client assertion their federated credentials
trust (``simulator.federation``). Tokens are JWTs signed with a
key of this simulator run, carrying the audience (the resource of the ``<resource>/.default`` scope
asked for) and an expiry in real time, so they expire as real Entra tokens do while a run goes on.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qs

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from simulator.federation import JWT_BEARER, GrantRefused, IssuerKeys, verify_assertion
from simulator.scenario_identity import AadSpec

# the AKS server application: the audience of every token the Kubernetes API of an AKS cluster takes
AKS_SERVER_APP = "6dae42f8-4368-4678-94ff-3960e28e3630"
ALGORITHM = "HS256"
_TENANT_PATH = re.compile(r"^/[^/]+/(oauth2/|v2\.0/\.well-known/|discovery/)")


class TokenProblem(StrEnum):
    """Why a token is refused."""

    expired = "the token has expired"
    audience = "the token is for another audience"
    invalid = "the token is not valid"


def decode_token(
    token: str, key: Any, algorithm: str, audience: str | list[str], issuer: str, required: list[str]
) -> dict | TokenProblem:
    """The token's claims when ``key`` verifies it, it has not expired, it is for ``audience`` (one of
    them, given a list), ``issuer`` issued it and it carries the ``required`` claims; else why not."""
    try:
        return jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=audience,
            issuer=issuer,
            options={"require": required},
        )
    except jwt.ExpiredSignatureError:
        return TokenProblem.expired
    except jwt.InvalidAudienceError:
        return TokenProblem.audience
    except jwt.PyJWTError:
        return TokenProblem.invalid


@dataclass
class TokenService:
    """The tenant, its one service principal, and the tokens issued so far."""

    spec: AadSpec
    base_url: str  # https://127.0.0.1:<port>, the authority host
    lifetime_seconds: int  # real seconds
    client_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    issued: Counter[str] = field(default_factory=Counter)  # tokens issued per audience
    # the CA bundles trusted when fetching an external issuer's documents
    ca_files: list[str] = field(default_factory=list)
    _key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._applications = {a.client_id.lower(): a for a in self.spec.applications}
        self.issuer_keys = IssuerKeys(list(self.ca_files))

    @classmethod
    def for_scenario(
        cls, spec: AadSpec, base_url: str, time_scale: float, ca_files: list[str] | None = None
    ) -> TokenService:
        """The scenario's token service; it trusts ``ca_files`` (the simulator's CA) and the scenario's
        ``trusted_ca_bundle`` when it fetches an issuer's documents."""
        trusted = [*(ca_files or []), *([spec.trusted_ca_bundle] if spec.trusted_ca_bundle else [])]
        return cls(spec, base_url, max(1, round(spec.token_lifetime_seconds * time_scale)), ca_files=trusted)

    @property
    def tenant_id(self) -> str:
        return self.spec.tenant_id

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/{self.tenant_id}/v2.0"

    def metadata(self) -> dict:
        tenant = f"{self.base_url}/{self.tenant_id}"
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{tenant}/oauth2/v2.0/authorize",
            "token_endpoint": f"{tenant}/oauth2/v2.0/token",
            "jwks_uri": f"{self.base_url}/{self.tenant_id}/discovery/v2.0/keys",
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "tenant_region_scope": "EU",
        }

    async def grant(self, form: dict[str, str]) -> tuple[int, dict]:
        """The client-credentials grant: (HTTP status, body) as Entra ID answers it."""
        try:
            client_id, object_id, resource = await self._sign_in(form)
        except GrantRefused as refused:
            return refused.status, _error(refused.error, refused.code, refused.description)
        return 200, self.issue(resource, client_id, object_id)

    async def _sign_in(self, form: dict[str, str]) -> tuple[str, str, str]:
        """The client id, object id and resource of a grant Entra ID accepts; else ``GrantRefused``.
        The service principal signs in with its secret, an application with a client assertion
        its federated credentials trust."""
        if form.get("grant_type") != "client_credentials":
            raise GrantRefused(
                400,
                "unsupported_grant_type",
                "AADSTS70003",
                f"The app requested an unsupported grant type '{form.get('grant_type', '')}'.",
            )
        for name in ("client_id", "scope"):
            if not form.get(name):
                raise GrantRefused(
                    400,
                    "invalid_request",
                    "AADSTS900144",
                    f"The request body must contain the following parameter: '{name}'.",
                )
        client_id = form["client_id"]
        application = self._applications.get(client_id.lower())
        if client_id != self.client_id and application is None:
            raise GrantRefused(
                400,
                "unauthorized_client",
                "AADSTS700016",
                f"Application with identifier '{client_id}' was not found in the directory '{self.tenant_id}'.",
            )
        if application is not None and (form.get("client_assertion") or form.get("client_assertion_type")):
            if form.get("client_assertion_type") != JWT_BEARER or not form.get("client_assertion"):
                raise _credential_missing()
            await verify_assertion(application, form["client_assertion"], self.issuer_keys)
            return application.client_id, application.object_id or application.client_id, _resource(form)
        if application is not None and not form.get("client_secret"):
            raise _credential_missing()
        secret = self.client_secret if application is None else ""  # applications here have no secret
        if not secret or not secrets.compare_digest(form.get("client_secret", ""), secret):
            raise GrantRefused(
                401,
                "invalid_client",
                "AADSTS7000215",
                "Invalid client secret provided. Ensure the secret being sent in the request is the "
                "client secret value, not the client secret ID.",
            )
        return self.client_id, self.client_id, _resource(form)

    def issue(self, audience: str, client_id: str = "", object_id: str = "") -> dict:
        """A token for ``audience`` (the service principal's unless another client is named)."""
        client_id = client_id or self.client_id
        object_id = object_id or client_id
        now = time.time()
        expires = round(now + self.lifetime_seconds)
        claims = {
            "aud": audience,
            "iss": self.issuer,
            "tid": self.tenant_id,
            "appid": client_id,
            "sub": object_id,
            "oid": object_id,
            "iat": int(now),
            "nbf": int(now),
            "exp": expires,
            "jti": uuid.uuid4().hex,
        }
        with self._lock:
            self.issued[audience] += 1
        return {
            "token_type": "Bearer",
            "expires_in": self.lifetime_seconds,
            "ext_expires_in": self.lifetime_seconds,
            "access_token": jwt.encode(claims, self._key, algorithm=ALGORITHM),
        }

    def verify(self, token: str, audiences: list[str]) -> dict | TokenProblem:
        """The token's claims when it is ours, unexpired and for one of ``audiences``; else why not."""
        return decode_token(token, self._key, ALGORITHM, audiences, self.issuer, ["exp", "aud", "iss"])

    def problem(self, token: str, audiences: list[str]) -> TokenProblem | None:
        """None when the token is ours, unexpired and for one of ``audiences``; else why not."""
        claims = self.verify(token, audiences)
        return None if isinstance(claims, dict) else claims

    def counts(self) -> dict:
        """Tokens issued per audience (the ``/_sim/tokens`` observation; never the tokens)."""
        with self._lock:
            return {"lifetime_seconds": self.lifetime_seconds, "issued": dict(self.issued)}

    # ---- HTTP ------------------------------------------------------------------------
    def serves(self, path: str) -> bool:
        """A token service path of any tenant (another tenant gets Entra's 'not found' answer)."""
        return _TENANT_PATH.match(path) is not None

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        tenant = path.split("/")[1]
        if tenant != self.tenant_id:
            return JSONResponse(
                _error("invalid_request", "AADSTS90002", f"Tenant '{tenant}' not found."), status_code=400
            )
        rest = path[len(tenant) + 1 :]
        if request.method == "GET" and rest == "/v2.0/.well-known/openid-configuration":
            return JSONResponse(self.metadata())
        if request.method == "POST" and rest == "/oauth2/v2.0/token":
            form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
            status, body = await self.grant(form)
            return JSONResponse(body, status_code=status)
        return JSONResponse(
            _error("invalid_request", "AADSTS900561", f"The endpoint {path} is not served here."),
            status_code=404,
        )


def _resource(form: dict[str, str]) -> str:
    """The one resource of a client-credentials scope (``<resource>/.default``)."""
    resources = [s.removesuffix("/.default") for s in form["scope"].split() if s.endswith("/.default")]
    if len(resources) != 1:
        raise GrantRefused(
            400,
            "invalid_scope",
            "AADSTS1002012",
            f"The provided value for scope {form['scope']} is not valid. Client credential flows "
            "must have a scope value with /.default suffixed to the resource identifier.",
        )
    return resources[0]


def _credential_missing() -> GrantRefused:
    return GrantRefused(
        401,
        "invalid_client",
        "AADSTS7000218",
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    )


def _error(error: str, code: str, description: str) -> dict:
    return {
        "error": error,
        "error_description": f"{code}: {description}",
        "error_codes": [int(code.removeprefix("AADSTS"))],
        "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
        "trace_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
    }
