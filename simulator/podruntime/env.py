"""A container's environment as the kubelet builds it: the variables every container gets, then
``envFrom``, then ``env`` (plain values with ``$(VAR)`` references, and values from the pod's own
fields, Secrets and ConfigMaps), on top of the project's environment so that ``python`` and
``prefect`` resolve to the simulator's own virtualenv."""

from __future__ import annotations

import base64
import os
import re
import sys
from collections.abc import Callable, Mapping

# (kind, namespace, name) -> the stored object, or None
Lookup = Callable[[str, str, str], dict | None]

_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class EnvError(Exception):
    """A variable that cannot be filled (a missing Secret, ConfigMap or key): CreateContainerConfigError."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: a defined variable is replaced, ``$$`` is a literal ``$``,
    anything else stays as written."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(replace, text)


def field_value(pod: dict, path: str) -> str:
    """A ``fieldRef``: the pod's own fields the downward API offers."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": status.get("podIP", ""),
        "status.hostIP": status.get("hostIP", ""),
    }
    if path in simple:
        return simple[path]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    raise EnvError(f"unsupported fieldRef {path!r}")


def _data(obj: dict) -> dict[str, str]:
    """The text values of a ConfigMap, or the decoded values of a Secret."""
    if obj["kind"] == "Secret":
        values = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        return values | dict(obj.get("stringData") or {})
    return dict(obj.get("data") or {})


def _ref_value(pod: dict, source: dict, lookup: Lookup) -> str | None:
    namespace = pod["metadata"]["namespace"]
    if "fieldRef" in source:
        return field_value(pod, source["fieldRef"]["fieldPath"])
    for key, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
        if key not in source:
            continue
        ref = source[key]
        obj = lookup(kind, namespace, ref["name"])
        values = _data(obj) if obj is not None else {}
        if ref["key"] in values:
            return values[ref["key"]]
        if ref.get("optional"):
            return None
        what = "secret" if kind == "Secret" else "configmap"
        if obj is None:
            raise EnvError(f'{what} "{ref["name"]}" not found')
        raise EnvError(f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}")
    raise EnvError(f"unsupported valueFrom {sorted(source)}")


def container_env(pod: dict, container: dict, lookup: Lookup, api_port: int) -> dict[str, str]:
    """The process environment of ``container`` in ``pod``."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    port = str(api_port)
    defined = {
        "HOSTNAME": pod["metadata"]["name"],
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": port,
        "KUBERNETES_SERVICE_PORT_HTTPS": port,
        "KUBERNETES_PORT": f"tcp://127.0.0.1:{port}",
    }
    namespace = pod["metadata"]["namespace"]
    for source in container.get("envFrom") or []:
        for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            if key not in source:
                continue
            obj = lookup(kind, namespace, source[key]["name"])
            if obj is None:
                if source[key].get("optional"):
                    continue
                raise EnvError(f'{kind.lower()} "{source[key]["name"]}" not found')
            prefix = source.get("prefix", "")
            defined |= {prefix + k: v for k, v in _data(obj).items()}
    for var in container.get("env") or []:
        if "valueFrom" in var:
            value = _ref_value(pod, var["valueFrom"], lookup)
            if value is not None:
                defined[var["name"]] = value
        else:
            defined[var["name"]] = expand(var.get("value", ""), defined)
    return env | defined
