"""Label and field selectors: syntax, matching rules and error texts."""

import pytest

from simulator.k8s.field_selectors import field_value, parse_field_selector
from simulator.k8s.selectors import (
    SelectorError,
    parse_label_selector,
    selector_from_dict,
)

WEB = {"app": "web", "tier": "frontend", "replicas": "3"}


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("app=web", WEB, True),
        ("app=db", WEB, False),
        ("app==web", WEB, True),
        ("app!=web", WEB, False),
        ("app!=db", WEB, True),
        ("missing!=x", WEB, True),
        ("tier in (frontend,backend)", WEB, True),
        ("tier in (backend)", WEB, False),
        ("missing in (x)", WEB, False),
        ("tier notin (frontend)", WEB, False),
        ("tier notin (backend)", WEB, True),
        ("missing notin (x)", WEB, True),
        ("app", WEB, True),
        ("missing", WEB, False),
        ("!missing", WEB, True),
        ("!app", WEB, False),
        ("replicas>2", WEB, True),
        ("replicas<3", WEB, False),
        ("app>2", WEB, False),
        ("app=web,tier=frontend", WEB, True),
        ("app=web,tier=backend", WEB, False),
        ("app=", {"app": ""}, True),
        ("app=", WEB, False),
    ],
)
def test_label_selector_operators(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_label_selector(text).matches(labels) is expected


def test_label_selector_tolerates_whitespace() -> None:
    selector = parse_label_selector("  app = web ,  tier in ( frontend , backend ) ,! spot ")
    assert selector.matches(WEB)
    assert not selector.matches({**WEB, "spot": "true"})
    assert str(selector) == "app=web,!spot,tier in (backend,frontend)"


def test_empty_label_selector_matches_everything() -> None:
    for text in ("", "   "):
        selector = parse_label_selector(text)
        assert selector.empty
        assert selector.matches(WEB)
        assert selector.matches(None)
    assert not parse_label_selector("app").empty


def test_label_selector_with_no_labels_on_the_object() -> None:
    assert parse_label_selector("app!=web").matches(None)
    assert not parse_label_selector("app=web").matches(None)


def test_label_selector_prints_canonically_sorted_by_key() -> None:
    selector = parse_label_selector("z in (b,a,b),example.com/role=x,!gone,k8s.io/p")
    assert str(selector) == "example.com/role=x,!gone,k8s.io/p,z in (a,b)"


def test_in_with_trailing_comma_includes_the_empty_value() -> None:
    selector = parse_label_selector("tier in (frontend,)")
    assert selector.matches({"tier": ""})
    assert selector.matches({"tier": "frontend"})
    assert parse_label_selector("tier in ()").matches({"tier": ""})


def test_keywords_are_plain_identifiers_outside_operator_position() -> None:
    assert parse_label_selector("in=notin").matches({"in": "notin"})
    assert parse_label_selector("x in (in,notin)").matches({"x": "notin"})


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("app in web", "'web'"),
        ("app=web,", "end of string"),
        (",app", "','"),
        ("app web", "'web'"),
        ("!app=web", "'='"),
        ("app in (web", "end of string"),
        ("app=web extra", "'extra'"),
        ("=web", "'='"),
        ("bad!key", "'!'"),
        ("app>many", "'app'"),
        ("app=-web", "'-web'"),
        ("Bad_Prefix/app=1", "'Bad_Prefix/app'"),
        ("/app=1", "'/app'"),
        (f"{'a' * 64}=1", "'" + "a" * 64 + "'"),
    ],
)
def test_label_selector_syntax_errors_quote_the_bad_part(text: str, quoted: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_label_selector(text)
    assert quoted in str(caught.value)


def test_selector_error_is_a_value_error() -> None:
    assert issubclass(SelectorError, ValueError)


def test_selector_from_dict_match_labels_and_expressions() -> None:
    selector = selector_from_dict(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["frontend", "edge"]},
                {"key": "zone", "operator": "NotIn", "values": ["west"]},
                {"key": "replicas", "operator": "Exists"},
                {"key": "spot", "operator": "DoesNotExist"},
            ],
        }
    )
    assert not selector.empty
    assert selector.matches(WEB)
    assert not selector.matches({**WEB, "zone": "west"})
    assert not selector.matches({**WEB, "spot": "yes"})
    assert not selector.matches({"app": "web", "tier": "frontend"})
    assert str(selector) == "app=web,replicas,!spot,tier in (edge,frontend),zone notin (west)"


@pytest.mark.parametrize("selector", [None, {}, {"matchLabels": {}, "matchExpressions": []}])
def test_selector_from_empty_dict_matches_everything_and_says_empty(selector: dict | None) -> None:
    parsed = selector_from_dict(selector)
    assert parsed.empty
    assert parsed.matches(WEB)
    assert parsed.matches(None)


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}, "'Gt' is not a valid"),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}, "can't be empty"),
        ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}, "must be empty"),
        ({"matchLabels": {"a b": "x"}}, "invalid label key 'a b'"),
        ({"matchLabels": {"a": "x y"}}, "invalid label value 'x y'"),
        ({"matchLabels": {"a": 1}}, "must be strings"),
    ],
)
def test_selector_from_dict_rejects_invalid_selectors(selector: dict, message: str) -> None:
    with pytest.raises(SelectorError, match=message):
        selector_from_dict(selector)


NODE_FIELDS = {"metadata.name", "spec.unschedulable"}
POD_FIELDS = {"metadata.name", "metadata.namespace", "spec.nodeName", "status.phase"}
POD = {
    "metadata": {"name": "web-1", "namespace": "default"},
    "spec": {"nodeName": "aks-nodepool1-0"},
    "status": {"phase": "Running"},
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("spec.nodeName=aks-nodepool1-0", True),
        ("spec.nodeName==aks-nodepool1-0", True),
        ("spec.nodeName!=aks-nodepool1-0", False),
        ("spec.nodeName=aks-nodepool1-1", False),
        ("metadata.name=web-1,metadata.namespace=default", True),
        ("metadata.name=web-1,status.phase!=Running", False),
        ("status.phase!=Succeeded,status.phase!=Failed", True),
        ("", True),
    ],
)
def test_field_selector_matching(text: str, expected: bool) -> None:
    assert parse_field_selector(text, POD_FIELDS).matches(POD) is expected


def test_field_selector_missing_field_is_empty_string() -> None:
    unscheduled = {"metadata": {"name": "pending"}, "status": {"phase": "Pending"}}
    assert parse_field_selector("spec.nodeName=", POD_FIELDS).matches(unscheduled)
    assert not parse_field_selector("spec.nodeName!=", POD_FIELDS).matches(unscheduled)


def test_field_values_render_like_kubernetes() -> None:
    node = {"metadata": {"name": "n1"}, "spec": {"unschedulable": True, "podCIDRs": ["10.0.0.0/24"]}}
    assert field_value(node, "spec.unschedulable") == "true"
    assert field_value({"spec": {"unschedulable": False}}, "spec.unschedulable") == "false"
    assert field_value({"count": 3}, "count") == "3"
    assert field_value(node, "spec.podCIDRs") == ""
    assert field_value(node, "metadata.name.first") == ""
    assert parse_field_selector("spec.unschedulable=true", NODE_FIELDS).matches(node)


def test_field_selector_unsupported_field_message_matches_kubernetes() -> None:
    with pytest.raises(SelectorError) as caught:
        parse_field_selector("spec.nodeName=n1", NODE_FIELDS)
    assert str(caught.value) == "field label not supported: spec.nodeName"


def test_field_selector_escapes_in_values() -> None:
    selector = parse_field_selector(r"metadata.name=a\,b\=c\\d", POD_FIELDS)
    assert selector.requirements[0].value == "a,b=c\\d"
    assert selector.matches({"metadata": {"name": "a,b=c\\d"}})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metadata.name", "can't understand 'metadata.name'"),
        ("metadata.name=a=b", "unescaped '='"),
        (r"metadata.name=a\x", "invalid escape sequence"),
        ("metadata.name=a\\", "lone backslash"),
    ],
)
def test_field_selector_syntax_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError, match=message):
        parse_field_selector(text, POD_FIELDS)


def test_empty_field_selector() -> None:
    assert parse_field_selector("", POD_FIELDS).empty
    assert not parse_field_selector("status.phase=Running", POD_FIELDS).empty
