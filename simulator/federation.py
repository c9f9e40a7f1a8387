"""Workload identity federation for the simulated Entra ID: checking a client assertion issued by an
external OIDC issuer (a Kubernetes cluster's service-account issuer) against an application's federated
identity credentials, as Entra ID does.

The checks run in Entra's order: the assertion must parse as a JWT, one of the application's federated
credentials must name its issuer, subject and audience exactly, it must be within its valid time range,
and its signature must verify with a key from the issuer's JWKS. The issuer's discovery document and
JWKS are fetched over HTTPS with an async client (the issuer may be this very server), trusting the
given CA bundles, and kept for a short while. Each refusal is a ``GrantRefused`` worded as Entra words it.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import jwt

from simulator.scenario_identity import ApplicationSpec, FederatedCredentialSpec

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWKS_CACHE_SECONDS = 30.0
FETCH_TIMEOUT_SECONDS = 10.0
WORKLOAD_IDENTITY_DOCS = (
    "https://docs.microsoft.com/en-us/azure/active-directory/develop/workload-identity-federation"
)
CERTIFICATE_CREDENTIALS_DOCS = "https://learn.microsoft.com/entra/identity-platform/certificate-credentials"


class GrantRefused(Exception):
    """A token request Entra ID refuses: the HTTP status, the OAuth error and the AADSTS code."""

    def __init__(self, status: int, error: str, code: str, description: str):
        super().__init__(f"{code}: {description}")
        self.status = status
        self.error = error
        self.code = code
        self.description = description


def _entra_time(epoch: float) -> str:
    """A time as Entra writes it in its messages, with seven fractional digits."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"


def _audiences(claims: dict) -> list[str]:
    aud = claims.get("aud", [])
    return [aud] if isinstance(aud, str) else [str(a) for a in aud]


@dataclass
class IssuerKeys:
    """Fetches and caches the signing keys of external OIDC issuers."""

    ca_files: list[str] = field(default_factory=list)
    cache_seconds: float = JWKS_CACHE_SECONDS
    fetches: int = 0  # documents fetched so far (for tests of the cache)
    _cache: dict[str, tuple[float, jwt.PyJWKSet]] = field(default_factory=dict, repr=False)

    def _verify(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        for path in self.ca_files:
            context.load_verify_locations(cafile=path)
        return context

    async def keys(self, issuer: str, refresh: bool = False) -> jwt.PyJWKSet:
        """The issuer's JWKS, from the cache unless it is stale or ``refresh`` is set."""
        cached = self._cache.get(issuer)
        if cached and not refresh and cached[0] > time.monotonic():
            return cached[1]
        discovery_url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            async with httpx.AsyncClient(verify=self._verify(), timeout=FETCH_TIMEOUT_SECONDS) as client:
                discovery = await client.get(discovery_url)
                discovery.raise_for_status()
                jwks_uri = discovery.json()["jwks_uri"]
                answer = await client.get(jwks_uri)
                answer.raise_for_status()
                keys = jwt.PyJWKSet.from_dict(answer.json())
        except (httpx.HTTPError, ValueError, KeyError, TypeError, jwt.PyJWTError) as exc:
            raise GrantRefused(
                400, "invalid_request", "AADSTS50166", "Request to External OIDC endpoint failed."
            ) from exc
        self.fetches += 1
        self._cache[issuer] = (time.monotonic() + self.cache_seconds, keys)
        return keys


def _match(application: ApplicationSpec, claims: dict) -> FederatedCredentialSpec:
    """The federated credential whose issuer, subject and audience the assertion names exactly."""
    issuer, subject, audiences = claims.get("iss"), claims.get("sub"), _audiences(claims)
    for credential in application.federated_credentials:
        audience_matches = any(a in audiences for a in credential.audiences)
        if credential.issuer == issuer and credential.subject == subject and audience_matches:
            return credential
    raise GrantRefused(
        401,
        "invalid_client",
        "AADSTS70021",
        "No matching federated identity record found for presented assertion. "
        f"Assertion Issuer: '{issuer}'. Assertion Subject: '{subject}'. "
        f"Assertion Audience: '{','.join(audiences)}'. {WORKLOAD_IDENTITY_DOCS}",
    )


def _check_time(claims: dict) -> None:
    now = time.time()
    valid_from = float(claims.get("nbf", claims.get("iat", 0)))
    expiry = float(claims.get("exp", 0))
    if not valid_from <= now < expiry:
        raise GrantRefused(
            401,
            "invalid_client",
            "AADSTS700024",
            f"Client assertion is not within its valid time range. Current time: {_entra_time(now)}, "
            f"assertion valid from {_entra_time(valid_from)}, expiry time of assertion "
            f"{_entra_time(expiry)}. Review the documentation at {CERTIFICATE_CREDENTIALS_DOCS} .",
        )


async def verify_assertion(application: ApplicationSpec, assertion: str, keys: IssuerKeys) -> dict:
    """The assertion's claims when it lets ``application`` sign in; else ``GrantRefused``."""
    try:
        header = jwt.get_unverified_header(assertion)
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise GrantRefused(
            400, "invalid_request", "AADSTS50027", "JWT token is invalid or malformed."
        ) from exc
    credential = _match(application, claims)
    _check_time(claims)
    issuer = credential.issuer
    key_set = await keys.keys(issuer)
    kid = str(header.get("kid", ""))
    if kid not in {k.key_id for k in key_set.keys}:
        key_set = await keys.keys(issuer, refresh=True)  # the issuer may have rotated its key
    key = next((k for k in key_set.keys if k.key_id == kid), None)
    if key is None:
        raise GrantRefused(
            401,
            "invalid_client",
            "AADSTS7000272",
            f"The certificate with identifier {kid} used to sign the federated credential could not be "
            f"found in the metadata of identity provider {issuer}. Please validate that your Identity "
            "Provider's metadata exposes the key used to sign the incoming token.",
        )
    try:
        return jwt.decode(
            assertion,
            key.key,
            algorithms=["RS256", "ES256"],
            audience=credential.audiences,
            issuer=issuer,
            options={"verify_exp": False, "verify_nbf": False},  # checked above, with Entra's message
        )
    except jwt.PyJWTError as exc:
        raise GrantRefused(
            401,
            "invalid_client",
            "AADSTS700027",
            "Client assertion contains an invalid signature. "
            "[Reason - The provided signature value did not match the expected signature value.]",
        ) from exc
