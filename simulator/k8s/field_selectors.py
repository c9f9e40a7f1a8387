"""Kubernetes field selectors: parsing and matching.

The simulated API server filters list and watch results with these, so the
grammar, the matching rules and the error texts follow the real API server
(k8s.io/apimachinery `fields` package).
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any

from simulator.k8s.selectors import SelectorError


@dataclass(frozen=True)
class FieldRequirement:
    """One `field=value` or `field!=value` condition."""

    field: str
    value: str
    negated: bool = False


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The text of a dotted field path in an object, as Kubernetes compares it ("" when absent)."""
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return ""


@dataclass(frozen=True)
class FieldSelector:
    """All requirements must hold (AND); no requirements means every object matches."""

    requirements: tuple[FieldRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        """True when the selector has no requirements."""
        return not self.requirements

    def matches(self, obj: Mapping[str, Any]) -> bool:
        """Whether the object's fields satisfy every requirement."""
        return all(
            (field_value(obj, requirement.field) == requirement.value) != requirement.negated
            for requirement in self.requirements
        )


def _split_unescaped(text: str, separator: str) -> list[str]:
    """Split on `separator` except where a backslash escapes it."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if char == separator and not escaped:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
            escaped = char == "\\" and not escaped
    parts.append("".join(current))
    return parts


def _unescape_field_value(value: str, term: str) -> str:
    """Undo `\\\\`, `\\,` and `\\=` escapes; other escapes and bare `,` or `=` are errors."""
    result, escaped = [], False
    for char in value:
        if escaped:
            if char not in "\\,=":
                raise SelectorError(
                    f"invalid field selector term {term!r}: invalid escape sequence '\\{char}'"
                )
            result.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in ",=":
            raise SelectorError(f"invalid field selector term {term!r}: unescaped {char!r} in value")
        else:
            result.append(char)
    if escaped:
        raise SelectorError(f"invalid field selector term {term!r}: value ends with a lone backslash")
    return "".join(result)


def _split_term(term: str) -> tuple[str, str, str] | None:
    """Split `field<op>value` at the first operator; at one position `!=` beats `==` beats `=`."""
    for index in range(len(term)):
        for operator in ("!=", "==", "="):
            if term.startswith(operator, index):
                return term[:index], operator, term[index + len(operator) :]
    return None


def parse_field_selector(text: str, supported: Set[str]) -> FieldSelector:
    """Parse the `fieldSelector` query text, e.g. `spec.nodeName=node-1,status.phase!=Succeeded`.

    Only fields in `supported` may be used, as each Kubernetes resource indexes
    a fixed set; any other field is rejected with the API server's own message.
    """
    requirements = []
    for term in _split_unescaped(text, ","):
        if not term:
            continue
        split = _split_term(term)
        if split is None:
            raise SelectorError(f"invalid field selector {text!r}: can't understand {term!r}")
        field, operator, raw_value = split
        if field not in supported:
            raise SelectorError(f"field label not supported: {field}")
        value = _unescape_field_value(raw_value, term)
        requirements.append(FieldRequirement(field, value, negated=operator == "!="))
    return FieldSelector(tuple(requirements))
