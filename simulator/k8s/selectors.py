"""Kubernetes label selectors: parsing and matching (field selectors are in ``field_selectors``).

The simulated API server filters list and watch results with these, so the
grammar, the matching rules and the error texts follow the real API server
(k8s.io/apimachinery `labels` package).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SelectorError(ValueError):
    """A selector could not be parsed or uses an unsupported field; the API server answers 400."""


# Operators as Kubernetes names them (k8s.io/apimachinery/pkg/selection).
EQUALS = "="
DOUBLE_EQUALS = "=="
NOT_EQUALS = "!="
IN = "in"
NOT_IN = "notin"
EXISTS = "exists"
DOES_NOT_EXIST = "!"
GREATER_THAN = "gt"
LESS_THAN = "lt"

_NAME_RE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_INTEGER_RE = re.compile(r"[+-]?[0-9]+")


def _key_problem(key: str) -> str | None:
    """Say why `key` is not a valid label key (an optional DNS prefix, a slash, a name), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        return "prefix part must be non-empty"
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.fullmatch(prefix)):
        return "prefix part must be a lowercase DNS subdomain of at most 253 characters"
    if not name or len(name) > 63 or not _NAME_RE.fullmatch(name):
        return (
            "name part must be 1-63 characters of letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None


def _value_problem(value: str) -> str | None:
    """Say why `value` is not a valid label value, or None."""
    if value and (len(value) > 63 or not _NAME_RE.fullmatch(value)):
        return (
            "a label value must be empty or 1-63 characters of letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None


@dataclass(frozen=True)
class LabelRequirement:
    """One condition on one label key, e.g. `tier in (web,api)`."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the labels satisfy this condition; negative operators also match a missing key."""
        present = self.key in labels
        if self.operator in (IN, EQUALS, DOUBLE_EQUALS):
            return present and labels[self.key] in self.values
        if self.operator in (NOT_IN, NOT_EQUALS):
            return not present or labels[self.key] not in self.values
        if self.operator == EXISTS:
            return present
        if self.operator == DOES_NOT_EXIST:
            return not present
        if not present or not _INTEGER_RE.fullmatch(labels[self.key]):
            return False
        have, want = int(labels[self.key]), int(self.values[0])
        return have > want if self.operator == GREATER_THAN else have < want

    def __str__(self) -> str:
        """The canonical text form Kubernetes prints, e.g. `app=web` or `!spot`."""
        if self.operator == EXISTS:
            return self.key
        if self.operator == DOES_NOT_EXIST:
            return "!" + self.key
        if self.operator in (IN, NOT_IN):
            return f"{self.key} {self.operator} ({','.join(self.values)})"
        symbol = {GREATER_THAN: ">", LESS_THAN: "<"}.get(self.operator, self.operator)
        return f"{self.key}{symbol}{self.values[0]}"


def _requirement(key: str, operator: str, values: list[str]) -> LabelRequirement:
    """Validate a requirement the way Kubernetes' NewRequirement does, then build it."""
    if not isinstance(key, str) or not all(isinstance(value, str) for value in values):
        raise SelectorError(f"label keys and values must be strings (key {key!r})")
    problem = _key_problem(key)
    if problem:
        raise SelectorError(f"invalid label key {key!r}: {problem}")
    if operator in (IN, NOT_IN) and not values:
        raise SelectorError(f"for 'in', 'notin' operators, values set can't be empty (key {key!r})")
    if operator in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS) and len(values) != 1:
        raise SelectorError(f"exact-match compatibility requires one single value (key {key!r})")
    if operator in (EXISTS, DOES_NOT_EXIST) and values:
        raise SelectorError(f"values set must be empty for exists and does not exist (key {key!r})")
    if operator in (GREATER_THAN, LESS_THAN) and (len(values) != 1 or not _INTEGER_RE.fullmatch(values[0])):
        raise SelectorError(f"for 'gt', 'lt' operators, exactly one integer value is required (key {key!r})")
    for value in values:
        problem = _value_problem(value)
        if problem:
            raise SelectorError(f"invalid label value {value!r} at key {key!r}: {problem}")
    return LabelRequirement(key, operator, tuple(sorted(set(values))))


@dataclass(frozen=True)
class LabelSelector:
    """All requirements must hold (AND); no requirements means every object matches."""

    requirements: tuple[LabelRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        """True when the selector has no requirements, so callers can give that case its own meaning."""
        return not self.requirements

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """Whether an object with these labels is selected."""
        labels = labels or {}
        return all(requirement.matches(labels) for requirement in self.requirements)

    def __str__(self) -> str:
        """Comma-separated canonical requirements, sorted by key, as Kubernetes prints selectors."""
        return ",".join(str(requirement) for requirement in self.requirements)


def _sorted_selector(requirements: list[LabelRequirement]) -> LabelSelector:
    """Kubernetes keeps requirements sorted by key; that order shows in printed selectors."""
    return LabelSelector(tuple(sorted(requirements, key=lambda requirement: requirement.key)))


# --- label selector text -------------------------------------------------------------------------

_END = "end of string"
_IDENTIFIER = "identifier"
_SYMBOLS = ("!=", "==", "=", "!", "(", ")", ",", ">", "<")
_SPECIAL_CHARACTERS = frozenset("=!(),<>")
_WHITESPACE = frozenset(" \t\r\n")
_DELIMITERS = _SPECIAL_CHARACTERS | _WHITESPACE
_BINARY_OPERATORS = {
    "=": EQUALS,
    "==": DOUBLE_EQUALS,
    "!=": NOT_EQUALS,
    ">": GREATER_THAN,
    "<": LESS_THAN,
    "in": IN,
    "notin": NOT_IN,
}


def _tokenize(text: str) -> list[tuple[str, str]]:
    """Split selector text into (kind, literal) tokens; kind is a symbol, "identifier" or the end marker."""
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char in _WHITESPACE:
            position += 1
        elif char in _SPECIAL_CHARACTERS:
            symbol = next(symbol for symbol in _SYMBOLS if text.startswith(symbol, position))
            tokens.append((symbol, symbol))
            position += len(symbol)
        else:
            start = position
            while position < len(text) and text[position] not in _DELIMITERS:
                position += 1
            tokens.append((_IDENTIFIER, text[start:position]))
    tokens.append((_END, ""))
    return tokens


class _LabelParser:
    """Recursive-descent parser over the tokens of one label selector string."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.position = 0

    def fail(self, found: str, expected: str) -> SelectorError:
        """An error naming the selector, the offending token and what would have been valid."""
        shown = repr(found) if found else _END
        return SelectorError(
            f"unable to parse label selector {self.text!r}: found {shown}, expected: {expected}"
        )

    def peek(self) -> tuple[str, str]:
        """The next token, left in place."""
        return self.tokens[self.position]

    def take(self) -> tuple[str, str]:
        """The next token, consumed; the end marker repeats once reached."""
        token = self.tokens[self.position]
        self.position = min(self.position + 1, len(self.tokens) - 1)
        return token

    def parse(self) -> LabelSelector:
        """Requirements separated by commas, up to the end of the text."""
        requirements: list[LabelRequirement] = []
        if self.peek()[0] == _END:
            return LabelSelector()
        while True:
            requirements.append(self.requirement())
            kind, literal = self.take()
            if kind == _END:
                return _sorted_selector(requirements)
            if kind != ",":
                raise self.fail(literal, "',' or end of string")
            if self.peek()[0] not in (_IDENTIFIER, "!"):
                raise self.fail(self.peek()[1], "identifier after ','")

    def requirement(self) -> LabelRequirement:
        """One requirement: `!key`, `key`, or `key <operator> value(s)`."""
        kind, literal = self.take()
        negated = kind == "!"
        if negated:
            kind, literal = self.take()
        if kind != _IDENTIFIER:
            raise self.fail(literal, "! or identifier")
        key = literal
        if negated:
            return _requirement(key, DOES_NOT_EXIST, [])
        if self.peek()[0] in (_END, ","):
            return _requirement(key, EXISTS, [])
        kind, literal = self.take()
        operator = _BINARY_OPERATORS.get(literal)
        if operator is None:
            raise self.fail(literal, "=, ==, !=, >, <, in or notin")
        values = self.value_set() if operator in (IN, NOT_IN) else [self.single_value()]
        return _requirement(key, operator, values)

    def single_value(self) -> str:
        """The value after `=`, `==`, `!=`, `>` or `<`; nothing before a comma or the end means ""."""
        if self.peek()[0] in (_END, ","):
            return ""
        kind, literal = self.take()
        if kind != _IDENTIFIER:
            raise self.fail(literal, "a value")
        return literal

    def value_set(self) -> list[str]:
        """Values in parentheses; as in Kubernetes a missing value between commas is the empty string."""
        kind, literal = self.take()
        if kind != "(":
            raise self.fail(literal, "'('")
        values: list[str] = []
        while True:
            kind, literal = self.take()
            if kind == _IDENTIFIER:
                values.append(literal)
                kind, literal = self.take()
            else:
                values.append("")
            if kind == ")":
                return values
            if kind != ",":
                raise self.fail(literal, "',' or ')'")


def parse_label_selector(text: str) -> LabelSelector:
    """Parse the `labelSelector` query text, e.g. `app=web,tier in (a,b),!spot`.

    An empty or blank string selects everything.
    """
    return _LabelParser(text).parse()


_EXPRESSION_OPERATORS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}


def selector_from_dict(selector: Mapping[str, Any] | None) -> LabelSelector:
    """Build a selector from a metav1.LabelSelector object (`matchLabels`, `matchExpressions`).

    None or an object with no requirements gives an empty selector that selects
    everything; check `.empty` where an empty selector must mean something else.
    """
    selector = selector or {}
    requirements = [
        _requirement(key, EQUALS, [value]) for key, value in (selector.get("matchLabels") or {}).items()
    ]
    for expression in selector.get("matchExpressions") or []:
        operator = _EXPRESSION_OPERATORS.get(expression.get("operator"))
        if operator is None:
            raise SelectorError(f"{expression.get('operator')!r} is not a valid label selector operator")
        requirements.append(
            _requirement(expression.get("key", ""), operator, list(expression.get("values") or []))
        )
    return _sorted_selector(requirements)
