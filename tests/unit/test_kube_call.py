"""Kube.call's verdicts: which API answers are retried, which are an access problem, which go back to
the caller, and what a person reads for each."""

from __future__ import annotations

import json
import ssl

import pytest
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

import aksmaint.kube as kube_module
from aksmaint.errors import ClusterAccessError, TransientApiError
from aksmaint.kube import Kube


class Answers:
    """An API method that answers from a script: exceptions are raised, anything else is returned."""

    def __init__(self, *answers: object):
        self.answers = list(answers)
        self.calls = 0
        self.kwargs: list[dict] = []

    def __call__(self, *args: object, **kwargs: object) -> object:
        self.calls += 1
        self.kwargs.append(kwargs)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer


def status(code: int, message: str = "", causes: list[dict] | None = None, headers: dict | None = None):
    exc = ApiException(status=code, reason={401: "Unauthorized", 403: "Forbidden"}.get(code, "Error"))
    exc.body = json.dumps({"kind": "Status", "message": message, "details": {"causes": causes or []}})
    exc.headers = headers
    return exc


@pytest.fixture
def kube(monkeypatch) -> Kube:
    sleeps: list[float] = []
    monkeypatch.setattr(kube_module.time, "sleep", sleeps.append)
    k = Kube(client.ApiClient(client.Configuration()), "aks-demo")
    k.sleeps = sleeps  # type: ignore[attr-defined]
    return k


def test_an_answer_comes_back_with_a_request_timeout_set(kube):
    api = Answers("ok")
    assert kube.call(api, "node") == "ok"
    assert api.kwargs[0]["_request_timeout"] == kube_module.REQUEST_TIMEOUT
    assert kube.calls == 1 and kube.sleeps == []


@pytest.mark.parametrize("code", [429, 500, 502, 503, 504])
def test_transient_answers_are_retried_then_succeed(kube, code):
    api = Answers(status(code), status(code), "ok")
    assert kube.call(api) == "ok"
    assert api.calls == 3 and len(kube.sleeps) == 2


def test_retry_after_is_honoured(kube):
    api = Answers(status(429, headers={"Retry-After": "3"}), "ok")
    kube.call(api)
    assert 3 <= kube.sleeps[0] <= 3.6  # the server's wait, with at most 20 % jitter


def test_transient_answers_that_last_become_a_transient_error(kube):
    api = Answers(status(503, "etcd leader changed"))
    with pytest.raises(TransientApiError, match=r"aks-demo: HTTP 503 Error: etcd leader changed"):
        kube.call(api)
    assert api.calls == kube.attempts


@pytest.mark.parametrize("code", [401, 403])
def test_refusals_are_an_access_problem_without_retry(kube, code):
    api = Answers(status(code, "nodes is forbidden: User cannot list resource"))
    with pytest.raises(ClusterAccessError, match="check the credentials and RBAC") as caught:
        kube.call(api)
    assert f"HTTP {code}" in str(caught.value) and api.calls == 1


def test_a_terminating_namespace_is_no_access_problem(kube):
    api = Answers(status(403, "namespace shop is being terminated", [{"reason": "NamespaceTerminating"}]))
    with pytest.raises(ApiException) as caught:
        kube.call(api, retry=False)
    assert not isinstance(caught.value, ClusterAccessError) and caught.value.status == 403


@pytest.mark.parametrize("code", [404, 409, 422])
def test_expected_answers_go_back_to_the_caller_at_once(kube, code):
    api = Answers(status(code))
    with pytest.raises(ApiException) as caught:
        kube.call(api)
    assert caught.value.status == code and api.calls == 1


def test_without_retry_the_caller_judges_even_a_429(kube):
    api = Answers(status(429))
    with pytest.raises(ApiException) as caught:
        kube.call(api, retry=False)
    assert caught.value.status == 429 and api.calls == 1


def test_a_refused_connection_is_retried_then_named(kube):
    refused = urllib3.exceptions.MaxRetryError(
        None, "/api", urllib3.exceptions.NewConnectionError(None, "[Errno 111] Connection refused")
    )
    api = Answers(refused)
    with pytest.raises(
        TransientApiError, match=r"API server unreachable: NewConnectionError \(Connection refused\)"
    ):
        kube.call(api)
    assert api.calls == kube.attempts


def test_a_certificate_that_does_not_verify_is_an_access_problem_at_once(kube):
    failure = urllib3.exceptions.MaxRetryError(
        None,
        "/api",
        urllib3.exceptions.SSLError(
            ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed")
        ),
    )
    api = Answers(failure)
    with pytest.raises(ClusterAccessError, match="TLS verification of the Kubernetes API of aks-demo failed"):
        kube.call(api)
    assert api.calls == 1
