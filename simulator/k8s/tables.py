"""Server-side tables (`meta.k8s.io/v1` Table) for `kubectl get`.

kubectl asks for `application/json;as=Table;v=v1;g=meta.k8s.io` and prints
whatever columns the server sends, so the columns and cell texts here follow
the real API server's printers. The server always sends every column;
kubectl shows the priority-1 ones only with `-o wide`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from simulator.k8s.tables_common import AGE_COLUMN, NAME_COLUMN, Object, Row, age_of, name_of
from simulator.k8s.tables_nodes_pods import NODE_COLUMNS, POD_COLUMNS, node_row, pod_row
from simulator.k8s.tables_other import (
    BINDING_COLUMNS,
    DAEMONSET_COLUMNS,
    DEPLOYMENT_COLUMNS,
    EVENT_COLUMNS,
    LEASE_COLUMNS,
    NAMESPACE_COLUMNS,
    PDB_COLUMNS,
    REPLICASET_COLUMNS,
    ROLE_COLUMNS,
    binding_row,
    daemonset_row,
    deployment_row,
    event_row,
    lease_row,
    namespace_row,
    pdb_row,
    replicaset_row,
    role_row,
)

# Values of the `includeObject` query parameter. The API server spells the
# default "Metadata" and also takes ""; "PartialObjectMetadata" is an alias.
_INCLUDE_OBJECT_VALUES = ("None", "Object", "Metadata", "PartialObjectMetadata", "")


def _default_row(obj: Object, now: datetime.datetime) -> Row:
    return [name_of(obj), age_of(obj, now)]


_PRINTERS: dict[str, tuple[list[dict[str, Any]], Callable[[Object, datetime.datetime], Row]]] = {
    "nodes": (NODE_COLUMNS, node_row),
    "pods": (POD_COLUMNS, pod_row),
    "poddisruptionbudgets": (PDB_COLUMNS, pdb_row),
    "leases": (LEASE_COLUMNS, lease_row),
    "deployments": (DEPLOYMENT_COLUMNS, deployment_row),
    "replicasets": (REPLICASET_COLUMNS, replicaset_row),
    "daemonsets": (DAEMONSET_COLUMNS, daemonset_row),
    "namespaces": (NAMESPACE_COLUMNS, namespace_row),
    "events": (EVENT_COLUMNS, event_row),
    "roles": (ROLE_COLUMNS, role_row),
    "clusterroles": (ROLE_COLUMNS, role_row),
    "rolebindings": (BINDING_COLUMNS, binding_row),
    "clusterrolebindings": (BINDING_COLUMNS, binding_row),
}


def _row_object(obj: Object, include_object: str) -> Any:
    if include_object == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata") or {},
    }


def to_table(
    resource: str,
    objects: list[dict[str, Any]],
    now: datetime.datetime,
    include_object: str = "PartialObjectMetadata",
    list_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Render objects of one resource (plural name, e.g. "pods") as a `meta.k8s.io/v1` Table.

    `include_object` is the `includeObject` query parameter: "None" leaves each
    row without its object, "Object" embeds the full object, and "Metadata"
    (or "" or "PartialObjectMetadata", the default) embeds only its metadata.
    `list_meta` supplies the list's resourceVersion, continue token and
    remaining count. Raises ValueError for any other `include_object`.
    """
    if include_object not in _INCLUDE_OBJECT_VALUES:
        raise ValueError(
            f"includeObject must be one of {', '.join(_INCLUDE_OBJECT_VALUES)}, not {include_object!r}"
        )
    if now.tzinfo is None:
        now = now.replace(tzinfo=datetime.UTC)
    columns, build_row = _PRINTERS.get(resource, ([NAME_COLUMN, AGE_COLUMN], _default_row))
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": build_row(obj, now)}
        if include_object != "None":
            row["object"] = _row_object(obj, include_object)
        rows.append(row)
    metadata = {
        key: value
        for key, value in (list_meta or {}).items()
        if key in ("resourceVersion", "continue", "remainingItemCount") and value not in (None, "")
    }
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": [dict(column) for column in columns],
        "rows": rows,
    }
