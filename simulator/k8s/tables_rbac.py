"""The server-side tables of the RBAC kinds, following the real API server's printers: roles show when
they were created, bindings the role they grant and, under ``-o wide``, their users, groups and
ServiceAccounts."""

from __future__ import annotations

import datetime

from simulator.k8s.tables_common import (
    AGE_COLUMN,
    NAME_COLUMN,
    Object,
    Row,
    age_of,
    column,
    get_path,
    name_of,
)

ROLE_COLUMNS = [NAME_COLUMN, column("Created At", "date", "Time at which the object was created.")]


def role_row(role: Object, now: datetime.datetime) -> Row:
    """Roles and ClusterRoles: the creation time in RFC 3339 (UTC), not an age."""
    return [name_of(role), get_path(role, "metadata", "creationTimestamp") or ""]


BINDING_COLUMNS = [
    NAME_COLUMN,
    column("Role", "string", "The role the binding grants, as kind/name."),
    AGE_COLUMN,
    column("Users", "string", "Users the binding applies to.", priority=1),
    column("Groups", "string", "Groups the binding applies to.", priority=1),
    column("ServiceAccounts", "string", "ServiceAccounts the binding applies to.", priority=1),
]


def binding_row(binding: Object, now: datetime.datetime) -> Row:
    """RoleBindings and ClusterRoleBindings; a ServiceAccount subject reads namespace/name."""
    role_ref = binding.get("roleRef") or {}
    names: dict[str, list[str]] = {"User": [], "Group": [], "ServiceAccount": []}
    for subject in binding.get("subjects") or []:
        name = subject.get("name", "")
        if subject.get("kind") == "ServiceAccount" and subject.get("namespace"):
            name = f"{subject['namespace']}/{name}"
        names.get(subject.get("kind", ""), []).append(name)
    return [
        name_of(binding),
        f"{role_ref.get('kind', '')}/{role_ref.get('name', '')}",
        age_of(binding, now),
        *(", ".join(names[kind]) for kind in ("User", "Group", "ServiceAccount")),
    ]
