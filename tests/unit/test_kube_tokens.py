"""KubeTokenSource: an Entra ID cluster's Kubernetes API token, renewed before it expires."""

from __future__ import annotations

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from kubernetes import client

from aksmaint.azure import KubeTokenSource
from aksmaint.errors import ClusterAccessError


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Credential:
    """Hands out numbered tokens living ``lifetime`` seconds; fails while ``down``."""

    def __init__(self, clock: Clock, lifetime: float):
        self.clock, self.lifetime, self.down, self.calls = clock, lifetime, False, 0

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        self.calls += 1
        if self.down:
            raise ClientAuthenticationError("AADSTS7000215: Invalid client secret provided.")
        return AccessToken(f"token-{self.calls}", int(self.clock.now + self.lifetime))


def source(lifetime: float) -> tuple[KubeTokenSource, Credential, Clock]:
    clock = Clock()
    credential = Credential(clock, lifetime)
    return KubeTokenSource(credential, "server/.default", "aks-demo", clock=clock), credential, clock


def test_an_hour_long_token_is_reused_until_its_last_five_minutes():
    tokens, credential, clock = source(3600)
    assert tokens.token() == "token-1"
    clock.now += 3600 - 301
    assert tokens.token() == "token-1"
    clock.now += 2  # 299 s left
    assert tokens.token() == "token-2"
    assert credential.calls == 2


def test_a_short_lived_token_is_renewed_in_its_second_half():
    tokens, credential, clock = source(60)
    tokens.token()
    clock.now += 29
    assert tokens.token() == "token-1"
    clock.now += 2
    assert tokens.token() == "token-2"


def test_a_failed_renewal_keeps_the_valid_token_and_tries_again():
    tokens, credential, clock = source(3600)
    tokens.token()
    clock.now += 3400
    credential.down = True
    assert tokens.token() == "token-1"
    assert tokens.token() == "token-1"
    assert credential.calls == 3  # it asked at each request
    credential.down = False
    assert tokens.token() == "token-4"


def test_no_token_at_all_is_a_clear_access_error():
    tokens, credential, clock = source(3600)
    tokens.token()
    credential.down = True
    clock.now += 3601
    with pytest.raises(
        ClusterAccessError, match="cannot get an Entra ID token for the Kubernetes API of aks-demo"
    ):
        tokens.token()


def test_install_puts_a_current_token_on_every_request():
    tokens, credential, clock = source(60)
    configuration = client.Configuration()
    tokens.install(configuration)
    assert configuration.auth_settings()["BearerToken"]["value"] == "Bearer token-1"
    clock.now += 45
    assert configuration.auth_settings()["BearerToken"]["value"] == "Bearer token-2"


def test_install_fails_up_front_when_the_credential_cannot_get_a_token():
    tokens, credential, clock = source(60)
    credential.down = True
    with pytest.raises(ClusterAccessError, match="AADSTS7000215"):
        tokens.install(client.Configuration())
