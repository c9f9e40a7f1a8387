"""Kubernetes client construction and error handling shared by every task.

One code path for every cluster: a kubeconfig (with its CA, verified unless the run explicitly sets
``cluster.insecure_skip_tls_verify``) or the in-cluster service account. Calls go through
``Kube.call``, which retries transient failures (throttling, 5xx, dropped connections) briefly and
turns permanent ones into errors a person can act on.
"""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client import V1Node, V1NodeSystemInfo, V1ObjectMeta
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from aksmaint.azure import fetch_kubeconfig
from aksmaint.errors import ClusterAccessError, TransientApiError
from aksmaint.params import MAX_CONCURRENCY, ClusterConnection

T = TypeVar("T")
_Part = TypeVar("_Part", covariant=True)
TRANSIENT_STATUS = {429, 500, 502, 503, 504}
REQUEST_TIMEOUT = (5, 30)  # connect, read (seconds): a hung call must not hang a task forever


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: throttling, server errors, dropped or refused connections, timeouts."""
    if isinstance(exc, TransientApiError):
        return True
    if isinstance(exc, ApiException):
        return exc.status in TRANSIENT_STATUS or exc.status == 0
    return isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))


def _tls_verification_failure(exc: BaseException) -> str | None:
    """The reason when a request failed because the server's certificate did not verify (no retry helps)."""
    reason = getattr(exc, "reason", None) if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
    if isinstance(reason, urllib3.exceptions.SSLError) and "certificate verify failed" in str(reason):
        text = str(reason)
        return text[text.index("certificate verify failed") :].split(" (_ssl")[0].rstrip(")'\"")
    return None


def _network_failure(exc: BaseException) -> str:
    """What went wrong on the wire, without the request's URL: e.g. NewConnectionError (Connection refused)."""
    reason = getattr(exc, "reason", None) if isinstance(exc, urllib3.exceptions.MaxRetryError) else None
    reason = reason or exc
    text = str(reason)
    detail = text.rsplit("] ", 1)[-1].strip(" ')\"") if "[Errno" in text else ""
    return f"{type(reason).__name__}" + (f" ({detail})" if detail else "")


def retry_after_seconds(exc: ApiException) -> float | None:
    value = (exc.headers or {}).get("Retry-After") if exc.headers else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def status_causes(exc: ApiException) -> list[dict] | None:
    """The causes of an API Status answer; None when the body is not a Status."""
    if exc.body is None:
        return None
    try:
        return json.loads(exc.body).get("details", {}).get("causes", []) or []
    except (ValueError, TypeError, AttributeError):
        return None


def has_cause(exc: ApiException, reason: str) -> bool:
    return any(c.get("reason") == reason for c in status_causes(exc) or [])


def describe_api_error(exc: ApiException) -> str:
    return f"HTTP {exc.status} {exc.reason}: {_status_message(exc)}"


def _status_message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body).get("message", "") if exc.body else ""
    except (ValueError, AttributeError):
        return str(exc.body)[:200]


@dataclass
class Kube:
    """API handles for one cluster plus the call wrapper that classifies errors."""

    api_client: client.ApiClient
    cluster_name: str
    tls_verified: bool = True
    core: client.CoreV1Api = field(init=False)
    apps: client.AppsV1Api = field(init=False)
    policy: client.PolicyV1Api = field(init=False)
    coordination: client.CoordinationV1Api = field(init=False)
    attempts: int = 4
    calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.policy = client.PolicyV1Api(self.api_client)
        self.coordination = client.CoordinationV1Api(self.api_client)

    def call(self, fn: Callable[..., T], *args: Any, retry: bool = True, **kwargs: Any) -> T:
        """Call an API method with a timeout; retry transient failures a few times with backoff.

        Permanent failures (401, 403, 422 ...) are raised at once as ApiException for the caller to
        judge (a 404 or 409 is often an expected answer). Credentials never appear in messages.
        """
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        delay = 0.2
        for attempt in range(1, self.attempts + 1):
            with self._lock:
                self.calls += 1
            try:
                return fn(*args, **kwargs)
            except ApiException as exc:
                # a namespace being deleted refuses new objects with 403: that is no access problem
                if exc.status in (401, 403) and not has_cause(exc, "NamespaceTerminating"):
                    raise ClusterAccessError(
                        f"the cluster {self.cluster_name} refused the request ({describe_api_error(exc)}); "
                        "check the credentials and RBAC of the identity the flow runs as"
                    ) from exc
                if not retry:
                    raise  # the caller judges every status itself (a drain retries an eviction's 429)
                if not is_transient(exc) or attempt == self.attempts:
                    if is_transient(exc):
                        raise TransientApiError(f"{self.cluster_name}: {describe_api_error(exc)}") from exc
                    raise
                wait = retry_after_seconds(exc) or delay
            except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
                if tls_failure := _tls_verification_failure(exc):
                    raise ClusterAccessError(
                        f"TLS verification of the Kubernetes API of {self.cluster_name} failed ({tls_failure}); "
                        "check the CA the kubeconfig names (certificate-authority or certificate-authority-data) "
                        "or the service account's ca.crt (verification can only be turned off explicitly, "
                        "with the cluster parameter insecure_skip_tls_verify, which is unsafe)"
                    ) from exc
                if attempt == self.attempts:
                    raise TransientApiError(
                        f"{self.cluster_name}: API server unreachable: {_network_failure(exc)}"
                    ) from exc
                wait = delay
            time.sleep(min(wait, 10) * (1 + random.random() * 0.2))
            delay = min(delay * 2, 5)
        raise AssertionError("unreachable")


class _WithMetadata(Protocol):
    @property
    def metadata(self) -> V1ObjectMeta | None: ...


class _WithSpec(Protocol[_Part]):
    @property
    def spec(self) -> _Part | None: ...


class _WithStatus(Protocol[_Part]):
    @property
    def status(self) -> _Part | None: ...


def meta(obj: _WithMetadata) -> V1ObjectMeta:
    """The metadata of an object read from the API server, which always sends it."""
    assert obj.metadata is not None, f"{type(obj).__name__} without metadata"
    return obj.metadata


def spec_of(obj: _WithSpec[_Part]) -> _Part:
    """The spec of an object read from the API server, which sends one (if only empty) for the kinds
    we read: nodes, pods, Leases and PodDisruptionBudgets."""
    assert obj.spec is not None, f"{type(obj).__name__} without spec"
    return obj.spec


def status_of(obj: _WithStatus[_Part]) -> _Part:
    """The status of a node or PodDisruptionBudget read from the API server, which always sends one."""
    assert obj.status is not None, f"{type(obj).__name__} without status"
    return obj.status


def node_info(node: V1Node) -> V1NodeSystemInfo:
    """A node's system info (boot id, kernel version ...), which every registered kubelet reports."""
    info = status_of(node).node_info
    assert info is not None, f"node {meta(node).name} reports no node info"
    return info


def object_ref(obj: _WithMetadata) -> str:
    """namespace/name, as people and kubectl name a namespaced object."""
    metadata = meta(obj)
    return f"{metadata.namespace}/{metadata.name}"


def node_gone(kube: Kube, name: str) -> bool:
    """True only when the API server says the node does not exist (any other answer: we cannot tell)."""
    try:
        kube.call(kube.core.read_node, name)
    except ApiException as exc:
        return exc.status == 404
    except Exception:
        return False
    return False


# the flow pod's variable that names the cluster it runs in (in_cluster), set in the pool's job template
CLUSTER_NAME_VARIABLE = "AKSMAINT_CLUSTER_NAME"


def _load_kubeconfig(cluster: ClusterConnection, configuration: client.Configuration) -> str:
    """Load the kubeconfig's chosen context into ``configuration``; the name of its cluster."""
    if not cluster.kubeconfig or not Path(cluster.kubeconfig).expanduser().is_file():
        raise ClusterAccessError(f"kubeconfig not found: {cluster.kubeconfig}")
    contexts, active = config.list_kube_config_contexts(config_file=cluster.kubeconfig)
    chosen = (
        active if not cluster.context else next((c for c in contexts if c["name"] == cluster.context), None)
    )
    if chosen is None:
        names = ", ".join(c["name"] for c in contexts) or "none"
        raise ClusterAccessError(
            f"context {cluster.context!r} is not in {cluster.kubeconfig} (contexts: {names})"
        )
    config.load_kube_config(
        config_file=cluster.kubeconfig,
        context=chosen["name"],
        client_configuration=configuration,
        persist_config=False,
    )
    return chosen["context"].get("cluster", chosen["name"])


def connect(cluster: ClusterConnection) -> Kube:
    """Build a client for the cluster and check that it answers (before any mutating request)."""
    configuration = client.Configuration()
    tokens = None
    given_name = cluster.name
    if cluster.in_cluster and not given_name:
        given_name = os.environ.get(CLUSTER_NAME_VARIABLE, "").strip()
        if not given_name:
            raise ClusterAccessError(
                f"in_cluster: name the cluster for its reports: set cluster.name or the variable "
                f"{CLUSTER_NAME_VARIABLE} in the pool's job template"
            )
    fetched_folder = None
    if cluster.aks is not None:
        fetched = fetch_kubeconfig(cluster.aks)
        fetched_folder, tokens = fetched.path.parent, fetched.tokens
        cluster = ClusterConnection(
            kubeconfig=str(fetched.path), insecure_skip_tls_verify=cluster.insecure_skip_tls_verify
        )
    try:
        if cluster.in_cluster:
            config.load_incluster_config(client_configuration=configuration)
            name = "in-cluster"
        else:
            name = _load_kubeconfig(cluster, configuration)
    except ConfigException as exc:
        raise ClusterAccessError(f"cannot use {cluster.describe()}: {exc}") from exc
    finally:
        if fetched_folder is not None:  # the client holds what it needs: no credential stays on disk
            shutil.rmtree(fetched_folder, ignore_errors=True)
    name = given_name or name
    # a kubeconfig's insecure-skip-tls-verify alone does not turn verification off: only the parameter does
    configuration.verify_ssl = not cluster.insecure_skip_tls_verify
    if cluster.insecure_skip_tls_verify:
        # the caller logs the warning to the run; urllib3 would otherwise repeat it on every request
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    if tokens is not None:  # an Entra ID cluster: every request carries a current token
        tokens.install(configuration)
    configuration.retries = 1
    # one pooled connection per thread that may call at once (up to MAX_CONCURRENCY nodes, each with a
    # worker and a slot renewer, plus the scan): the default (5 per CPU) drops connections under load,
    # and each new one costs a TLS handshake
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize, 2 * MAX_CONCURRENCY)
    kube = Kube(client.ApiClient(configuration), name, tls_verified=configuration.verify_ssl)
    kube.api_client.user_agent = "aks-node-maintenance/0.1"
    try:
        kube.call(client.VersionApi(kube.api_client).get_code)
    except TransientApiError as exc:
        raise ClusterAccessError(
            f"cannot reach the Kubernetes API of {name} at {configuration.host} ({exc}); "
            "check that the API server is up and that this machine can reach that address"
        ) from exc
    except ApiException as exc:
        raise ClusterAccessError(f"the Kubernetes API of {name} answered {describe_api_error(exc)}") from exc
    return kube


@functools.lru_cache(maxsize=16)
def _cached(cluster_json: str) -> Kube:
    return connect(ClusterConnection.model_validate_json(cluster_json))


def kube_for(cluster: ClusterConnection) -> Kube:
    """One client per cluster and process, shared by the flow's tasks and subflows."""
    return _cached(cluster.model_dump_json())


MERGE_PATCH = "application/merge-patch+json"


def patch_node(kube: Kube, name: str, build: Callable[[V1Node], dict | None], attempts: int = 5) -> V1Node:
    """Read-modify-write with a resourceVersion precondition; ``build`` returns None for no change."""
    for _ in range(attempts):
        node = kube.call(kube.core.read_node, name)
        patch = build(node)
        if patch is None:
            return node
        patch.setdefault("metadata", {})["resourceVersion"] = meta(node).resource_version
        try:
            return kube.call(kube.core.patch_node, name, patch, _content_type=MERGE_PATCH)
        except ApiException as exc:
            if exc.status != 409:
                raise
    raise RuntimeError(f"node {name} kept changing under us; gave up after {attempts} attempts")
