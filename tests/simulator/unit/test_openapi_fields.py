"""The OpenAPI v3 documents kubectl reads before it leaves validation to the server, and the server's
field validation (the fieldValidation query parameter)."""

from __future__ import annotations

import json

import pytest
from starlette.requests import Request

from simulator.k8s.errors import ApiError
from simulator.k8s.fields import validate_fields
from simulator.k8s.openapi import openapi_response
from simulator.k8s.resources import RESOURCE_TYPES, by_kind

CONFIG_MAP = by_kind("ConfigMap")


def get(path: str, query: str = ""):
    request = Request(
        {"type": "http", "method": "GET", "path": path, "query_string": query.encode(), "headers": []}
    )
    return openapi_response(request, "1.31.4")


def test_the_index_names_a_document_per_group_version_with_its_hash() -> None:
    paths = json.loads(get("/openapi/v3").body)["paths"]
    assert {"api/v1", "apis/apps/v1", "apis/rbac.authorization.k8s.io/v1"} <= set(paths)
    url = paths["apis/rbac.authorization.k8s.io/v1"]["serverRelativeURL"]
    path, query = url.split("?")
    response = get(path, query)
    assert response.status_code == 200 and response.headers["cache-control"].startswith("public, immutable")
    assert get(path, "hash=0").status_code == 301
    assert get("/openapi/v3/apis/nothing/v1") is None


def test_every_kind_takes_field_validation_and_the_strategic_merge_patch_on_patch() -> None:
    index = json.loads(get("/openapi/v3").body)["paths"]
    for rt in RESOURCE_TYPES:
        path, query = index[f"apis/{rt.group}/{rt.version}" if rt.group else "api/v1"][
            "serverRelativeURL"
        ].split("?")
        document = json.loads(get(path, query).body)
        patches = [
            item["patch"]
            for item in document["paths"].values()
            if item.get("patch", {}).get("x-kubernetes-group-version-kind", {}).get("kind") == rt.kind
        ]
        assert len(patches) == 1, rt.kind
        assert {"name": "fieldValidation", "in": "query"}.items() <= next(
            p for p in patches[0]["parameters"] if p["name"] == "fieldValidation"
        ).items()
        assert "application/strategic-merge-patch+json" in patches[0]["requestBody"]["content"]


def config_map(**extra: object) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}, **extra}


def test_warn_is_the_default_and_drops_unknown_fields_with_a_warning() -> None:
    obj = config_map(datta={"a": "b"})
    obj["metadata"]["lables"] = {}
    headers = validate_fields(None, "create", CONFIG_MAP, obj)
    assert headers == {
        "Warning": '299 - "unknown field \\"datta\\"", 299 - "unknown field \\"metadata.lables\\""'
    }
    assert obj == config_map()


def test_ignore_drops_unknown_fields_silently() -> None:
    obj = config_map(datta=1)
    assert validate_fields("Ignore", "update", CONFIG_MAP, obj) == {} and obj == config_map()


def test_strict_refuses_a_create_with_a_bad_request() -> None:
    with pytest.raises(ApiError) as refused:
        validate_fields("Strict", "create", CONFIG_MAP, config_map(datta=1, immutabel=True))
    assert refused.value.code == 400
    assert refused.value.message == (
        'ConfigMap in version "v1" cannot be handled as a ConfigMap: '
        'strict decoding error: unknown field "datta", unknown field "immutabel"'
    )


def test_strict_refuses_a_patch_as_invalid_quoting_the_patch_as_go_prints_it() -> None:
    with pytest.raises(ApiError) as refused:
        validate_fields("Strict", "patch", CONFIG_MAP, config_map(datta=1), {"datta": 1, "data": {"a": True}})
    assert refused.value.code == 422
    assert refused.value.message == (
        ' "" is invalid: patch: Invalid value: "map[data:map[a:true] datta:1]": '
        'strict decoding error: unknown field "datta"'
    )


def test_an_unknown_directive_is_refused_as_the_options_kind_words_it() -> None:
    with pytest.raises(ApiError) as refused:
        validate_fields("strict", "patch", CONFIG_MAP, config_map())
    assert refused.value.code == 422
    assert refused.value.message == (
        'PatchOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: "strict": '
        'supported values: "", "Ignore", "Strict", "Warn"'
    )
