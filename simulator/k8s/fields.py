"""Field validation of written objects, as the ``fieldValidation`` query parameter asks.

A real server decodes a body into its Go type, so a field the type lacks never reaches storage.
``Ignore`` drops such fields silently and ``Warn`` (the default) drops them with a ``Warning`` header.
``Strict`` refuses the request: a 400 for a create or an update, a 422 for a patch, worded as
kube-apiserver words them. The simulator knows the top-level fields of each kind and those of
``metadata``; deeper fields are not checked.
"""

from __future__ import annotations

import json
from typing import Any

from simulator.k8s.errors import ApiError, bad_request
from simulator.k8s.resources import ResourceType

DIRECTIVES = ("Ignore", "Warn", "Strict")
OBJECT_FIELDS = frozenset({"apiVersion", "kind", "metadata"})
METADATA_FIELDS = frozenset(
    [
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    ]
)


def validate_fields(
    directive: str | None, verb: str, rt: ResourceType, obj: dict, patch: dict | list | None = None
) -> dict[str, str]:
    """Drop the unknown fields of ``obj`` (changed in place) and return the response headers to send.

    ``verb`` is create, update or patch; ``patch`` is what a PATCH sent, which a Strict refusal quotes.
    Raises ApiError for an unknown directive and, under Strict, for an object with unknown fields.
    """
    directive = directive or "Warn"
    if directive not in DIRECTIVES:
        raise _unsupported_directive(directive, f"{verb.capitalize()}Options")
    unknown = _drop_unknown_fields(rt, obj)
    if not unknown:
        return {}
    errors = ", ".join(f'unknown field "{field}"' for field in unknown)
    if directive == "Strict" and verb != "patch":
        raise bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: strict decoding error: {errors}'
        )
    if directive == "Strict":
        quoted = json.dumps(_go_value(patch), ensure_ascii=False)  # Go's %q, near enough
        detail = f"Invalid value: {quoted}: strict decoding error: {errors}"
        cause = {"reason": "FieldValueInvalid", "message": detail, "field": "patch"}
        raise ApiError(422, "Invalid", f' "" is invalid: patch: {detail}', {"causes": [cause]})
    if directive == "Ignore":
        return {}
    return {"Warning": ", ".join(f'299 - "unknown field \\"{field}\\""' for field in unknown)}


def _unsupported_directive(directive: str, options_kind: str) -> ApiError:
    detail = f'Unsupported value: "{directive}": supported values: "", "Ignore", "Strict", "Warn"'
    cause = {"reason": "FieldValueNotSupported", "message": detail, "field": "fieldValidation"}
    return ApiError(
        422,
        "Invalid",
        f'{options_kind}.meta.k8s.io "" is invalid: fieldValidation: {detail}',
        {"group": "meta.k8s.io", "kind": options_kind, "causes": [cause]},
    )


def _drop_unknown_fields(rt: ResourceType, obj: dict) -> list[str]:
    """The paths of the unknown fields, in the order of the object, which no longer holds them."""
    unknown = [key for key in obj if key not in OBJECT_FIELDS | rt.fields]
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        unknown += [f"metadata.{key}" for key in meta if key not in METADATA_FIELDS]
        for key in [key for key in meta if key not in METADATA_FIELDS]:
            del meta[key]
    for key in [key for key in obj if key not in OBJECT_FIELDS | rt.fields]:
        del obj[key]
    return unknown


def _go_value(value: Any) -> str:
    """A decoded JSON value as Go's ``%+v`` prints it (maps with sorted keys), as the server quotes a patch."""
    if isinstance(value, dict):
        return "map[" + " ".join(f"{key}:{_go_value(value[key])}" for key in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_value(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<nil>"
    return str(value)
