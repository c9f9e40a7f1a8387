"""The three PATCH flavours the Kubernetes API server accepts, applied to plain JSON objects.

* JSON merge patch (RFC 7386), `application/merge-patch+json`;
* JSON patch (RFC 6902), `application/json-patch+json`;
* strategic merge patch, `application/strategic-merge-patch+json`, for the
  fields this simulator serves (kubectl and client-go send it by default).

None of the functions mutates its arguments.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import jsonpatch


class PatchError(ValueError):
    """The patch is malformed or cannot be applied; the server answers 400 or 422."""


def json_merge_patch(original: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Apply an RFC 7386 merge patch: null deletes a key, objects merge, anything else replaces."""
    if not isinstance(patch, dict):
        raise PatchError("a merge patch for an object must be a JSON object")
    return _merge_objects(original, patch)


def _merge_objects(original: Any, patch: dict[str, Any]) -> dict[str, Any]:
    """Merge `patch` into a copy of `original`, which is treated as {} when it is not an object."""
    result = copy.deepcopy(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = _merge_objects(result.get(key), value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def json_patch(original: dict[str, Any], operations: list[Any]) -> dict[str, Any]:
    """Apply an RFC 6902 list of operations (add, remove, replace, move, copy, test)."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a JSON array of operations")
    try:
        result = jsonpatch.apply_patch(original, operations, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
        raise PatchError(f"unable to apply JSON patch: {error}") from error
    if not isinstance(result, dict):
        raise PatchError("a JSON patch must leave a JSON object")
    return result


# --- strategic merge patch ---------------------------------------------------------------------

# Lists merged element by element, keyed by the last two field names of their
# path (list indexes are not part of a path), with the field naming an element.
_MERGE_KEYS: dict[tuple[str, ...], str] = {
    ("metadata", "ownerReferences"): "uid",
    ("status", "conditions"): "type",
    ("status", "addresses"): "type",
    ("spec", "containers"): "name",
    ("spec", "initContainers"): "name",
    ("spec", "volumes"): "name",
    ("containers", "env"): "name",
    ("initContainers", "env"): "name",
    ("containers", "volumeMounts"): "mountPath",
    ("initContainers", "volumeMounts"): "mountPath",
    ("containers", "ports"): "containerPort",
    ("initContainers", "ports"): "containerPort",
}
# Lists of plain values merged as a set union.
_UNION_LISTS: frozenset[tuple[str, ...]] = frozenset({("metadata", "finalizers")})

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ELEMENT_ORDER = "$setElementOrder/"
_DELETE_FROM_PRIMITIVE_LIST = "$deleteFromPrimitiveList/"


def strategic_merge_patch(original: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Apply a Kubernetes strategic merge patch.

    It is a merge patch, except that some lists merge element by element,
    matched on a merge key (owner references by uid, conditions
    and addresses by type, containers, env and volumes by name, volume mounts
    by mountPath, container ports by containerPort), `metadata.finalizers`
    merges as a set, and the `$patch`, `$retainKeys`, `$setElementOrder/…` and
    `$deleteFromPrimitiveList/…` directives are honoured. Other lists are
    replaced whole: `spec.taints` among them, since Kubernetes declares no patch strategy for it
    (kubectl taint reads the node and sends the whole list).
    """
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object")
    return _merge_map(copy.deepcopy(original), copy.deepcopy(patch), ())


def _merge_map(original: Any, patch: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """Merge a patch object into `original`, which this function owns and may change."""
    if _DIRECTIVE in patch:
        directive = patch.pop(_DIRECTIVE)
        if directive == "replace":
            return _merge_map({}, patch, path)
        if directive == "delete":
            return {}
        raise PatchError(f"unknown patch directive {directive!r} in map at {_dotted(path)}")
    result: dict[str, Any] = original if isinstance(original, dict) else {}
    _apply_retain_keys(result, patch, path)
    for key in [key for key in patch if key.startswith(_SET_ELEMENT_ORDER)]:
        del patch[key]
    for key in [key for key in patch if key.startswith(_DELETE_FROM_PRIMITIVE_LIST)]:
        field = key[len(_DELETE_FROM_PRIMITIVE_LIST) :]
        doomed = patch.pop(key)
        if not isinstance(doomed, list):
            raise PatchError(f"{key} at {_dotted(path)} must be a list")
        if isinstance(result.get(field), list):
            result[field] = [value for value in result[field] if value not in doomed]
    for key, value in patch.items():
        child = (*path, key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = _merge_map(result.get(key), value, child)
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, child)
        else:
            result[key] = value
    return result


def _apply_retain_keys(original: dict[str, Any], patch: dict[str, Any], path: tuple[str, ...]) -> None:
    """`$retainKeys`: drop original keys not listed; the patch itself may only set listed keys."""
    if _RETAIN_KEYS not in patch:
        return
    retained = patch.pop(_RETAIN_KEYS)
    if not isinstance(retained, list):
        raise PatchError(f"$retainKeys at {_dotted(path)} must be a list")
    for key, value in patch.items():
        if value is not None and not key.startswith("$") and key not in retained:
            raise PatchError(f"field {key!r} at {_dotted(path)} is set but not listed in $retainKeys")
    for key in [key for key in original if key not in retained]:
        del original[key]


def _merge_list(original: Any, patch: list[Any], path: tuple[str, ...]) -> list[Any]:
    """Merge a patch list into `original` according to the strategy for this path."""
    original = original if isinstance(original, list) else []
    merge_key = _MERGE_KEYS.get(path[-2:])
    if merge_key:
        return _merge_keyed_list(original, patch, merge_key, path)
    if path[-2:] in _UNION_LISTS:
        if any(isinstance(value, dict | list) for value in patch):
            raise PatchError(f"{_dotted(path)} is a list of plain values")
        merged: list[Any] = []
        for value in [*original, *patch]:
            if value not in merged:
                merged.append(value)
        return _kubernetes_order(merged, patch, original, lambda value: value)
    return patch


def _merge_keyed_list(
    original: list[Any], patch: list[Any], merge_key: str, path: tuple[str, ...]
) -> list[Any]:
    """Merge lists of objects that are matched by their `merge_key` field."""
    if not all(isinstance(element, dict) for element in [*original, *patch]):
        raise PatchError(f"{_dotted(path)} must be a list of objects")
    updates = []
    replace = False
    for element in patch:
        directive = element.get(_DIRECTIVE)
        if directive is None:
            updates.append(element)
        elif directive == "replace":
            replace = True
        elif directive == "delete":
            if merge_key not in element:
                raise PatchError(f"$patch: delete in {_dotted(path)} needs the merge key {merge_key!r}")
            original = [item for item in original if item.get(merge_key) != element[merge_key]]
        else:
            raise PatchError(f"unknown patch directive {directive!r} in {_dotted(path)}")
    if replace:
        return [_merge_map({}, element, path) for element in updates]

    merged = list(original)
    for element in updates:
        if merge_key not in element:
            raise PatchError(f"an element of {_dotted(path)} lacks the merge key {merge_key!r}: {element}")
        index = _index_of(merged, element[merge_key], lambda item: item.get(merge_key))
        if index is None:
            merged.append(_merge_map({}, element, path))
        else:
            merged[index] = _merge_map(merged[index], element, path)
    return _kubernetes_order(merged, updates, original, lambda item: item.get(merge_key))


def _kubernetes_order(
    merged: list[Any], patch: list[Any], original: list[Any], identity: Callable[[Any], Any]
) -> list[Any]:
    """Order a merged list as the API server does.

    Elements named in the patch keep the patch's order, elements only on the
    server keep theirs, and the two runs are interleaved: a server element goes
    before a patched one that followed it on the server, while an element new
    to the server goes before the server elements still waiting.
    """
    patch_ids = [identity(item) for item in patch]
    server_ids = [identity(item) for item in original]
    patched = sorted(
        (item for item in merged if identity(item) in patch_ids),
        key=lambda item: patch_ids.index(identity(item)),
    )
    server_only = [item for item in merged if identity(item) not in patch_ids]
    ordered: list[Any] = []
    while server_only and patched:
        server_index = _index_of(server_ids, identity(server_only[0]), lambda item: item)
        patched_index = _index_of(server_ids, identity(patched[0]), lambda item: item)
        if patched_index is not None and server_index is not None and server_index < patched_index:
            ordered.append(server_only.pop(0))
        else:
            ordered.append(patched.pop(0))
    return ordered + server_only + patched


def _index_of(items: list[Any], wanted: Any, identity: Callable[[Any], Any]) -> int | None:
    """Position of the first item whose identity equals `wanted`, or None."""
    return next((index for index, item in enumerate(items) if identity(item) == wanted), None)


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path) or "the top level"
