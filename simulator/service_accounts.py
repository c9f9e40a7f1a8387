"""The service-account token issuer of one simulated cluster, and its OIDC issuer documents.

Tokens are shaped like Kubernetes' bound service-account tokens: RS256 JWTs with ``iss``, ``sub``
(``system:serviceaccount:<ns>:<name>``), ``aud`` as a list, ``exp``/``iat``/``nbf``, a ``jti`` and the
``kubernetes.io`` claim naming the namespace, the service account and, when given, the pod and node.
Each simulator run signs with its own RSA key. The discovery document and the JWKS are what an AKS
OIDC issuer serves, so that Entra ID (real or simulated) can check a token it is shown.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from simulator.entra import TokenProblem, decode_token

ALGORITHM = "RS256"
DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/openid/v1/jwks"
# kube-apiserver's issuer when none is configured (a cluster not served over HTTP has no URL of its own)
IN_CLUSTER_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"

# the uid of a node by name, or None; the issuer asks the cluster's store through it
UidLookup = Callable[[str], str | None]


def subject(namespace: str, name: str) -> str:
    """The ``sub`` of a service account's tokens, which is also its user name."""
    return f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class ServiceAccountIssuer:
    """Issues and checks one cluster's service-account tokens.

    ``issuer`` is the ``iss`` of every token and the URL its discovery document lives under. The
    Kubernetes API takes tokens for ``api_audiences`` (by default the issuer, as kube-apiserver does).
    """

    issuer: str
    api_audiences: list[str] = field(default_factory=list)
    node_uid: UidLookup = lambda _name: None
    _key: rsa.RSAPrivateKey = field(default_factory=_new_key, repr=False)

    def __post_init__(self) -> None:
        self.issuer = self.issuer or IN_CLUSTER_ISSUER
        if not self.api_audiences:
            self.api_audiences = [self.issuer]
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # kube-apiserver names a key by the SHA-256 of its public key
        self.key_id = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
        self._pem = self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def service_account_uid(self, namespace: str, name: str) -> str:
        """A stable uid per service account (the simulator keeps no ServiceAccount objects)."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.issuer}#{namespace}/{name}"))

    def issue(
        self,
        namespace: str,
        name: str,
        audiences: list[str],
        lifetime_seconds: float,
        pod_name: str | None = None,
        pod_uid: str | None = None,
        node_name: str | None = None,
    ) -> str:
        """A signed token for the service account ``namespace/name``, valid for ``lifetime_seconds`` of
        real time. The pod and node are bound into the ``kubernetes.io`` claim when given. Binding a node
        reads its uid from the cluster's store: call it on the simulator's loop then."""
        now = int(time.time())
        kubernetes: dict[str, Any] = {
            "namespace": namespace,
            "serviceaccount": {"name": name, "uid": self.service_account_uid(namespace, name)},
        }
        if pod_name:
            kubernetes["pod"] = {"name": pod_name, "uid": pod_uid or ""}
        if node_name:
            kubernetes["node"] = {"name": node_name, "uid": self.node_uid(node_name) or ""}
        claims = {
            "aud": list(audiences),
            "exp": now + max(1, round(lifetime_seconds)),
            "iat": now,
            "iss": self.issuer,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": kubernetes,
            "nbf": now,
            "sub": subject(namespace, name),
        }
        return jwt.encode(claims, self._pem, algorithm=ALGORITHM, headers={"kid": self.key_id})

    def verify(self, token: str, audience: str | list[str]) -> dict | TokenProblem:
        """The token's claims when this issuer signed it, it has not expired and it is for
        ``audience`` (one of them, given a list); else why not."""
        required = ["exp", "iat", "aud", "iss", "sub"]
        return decode_token(token, self._key.public_key(), ALGORITHM, audience, self.issuer, required)

    # ---- the OIDC issuer documents -----------------------------------------------------
    @property
    def jwks_uri(self) -> str:
        return self.issuer.rstrip("/") + JWKS_PATH

    def discovery(self) -> dict:
        """The OpenID discovery document, with the fields an AKS OIDC issuer serves."""
        return {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [ALGORITHM],
        }

    def jwks(self) -> dict:
        numbers = self._key.public_key().public_numbers()
        key = {
            "use": "sig",
            "kty": "RSA",
            "kid": self.key_id,
            "alg": ALGORITHM,
            "n": _b64url_uint(numbers.n),
            "e": _b64url_uint(numbers.e),
        }
        return {"keys": [key]}

    def document(self, path: str) -> bytes | None:
        """The JSON body served at ``path``, or None when ``path`` is no issuer document. Both documents
        are served at the server's root and under the issuer's own path, if it has one."""
        prefix = urlsplit(self.issuer).path.rstrip("/")
        for base in {"", prefix}:
            if path == base + DISCOVERY_PATH:
                return json.dumps(self.discovery()).encode()
            if path == base + JWKS_PATH:
                return json.dumps(self.jwks()).encode()
        return None
