"""Nothing Prefect walks holds a live object.

Before a task or subflow runs, Prefect walks its parameters to resolve futures, and rebuilds any dataclass
whose fields look changed with ``dataclasses.replace``. A live object among the parameters (an API client,
a lock, a counter other threads increment) makes that walk fail at random under concurrency, and a node
then fails for a bookkeeping reason. So every parameter of every task and flow of the project is plain
data: scalars, enums, pydantic models, frozen dataclasses of plain data, and containers of those.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import pkgutil
import types
import typing
from collections.abc import Iterator

import pytest
from prefect import Flow, Task
from pydantic import BaseModel

import flows
import tasks
from aksmaint.kube import Kube

SCALARS = (str, int, float, bool, type(None), bytes)
JSON = (typing.Any, dict, list, tuple)  # a bare container or Any: JSON as it comes from the UI form


def prefect_callables() -> Iterator[tuple[str, Task | Flow]]:
    for package in (flows, tasks):
        for info in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
            module = importlib.import_module(info.name)
            for name, value in vars(module).items():
                if isinstance(value, Task | Flow) and getattr(value.fn, "__module__", "") == module.__name__:
                    yield f"{module.__name__}.{name}", value


def live_parts(annotation: object, seen: set | None = None) -> list[str]:
    """The parts of a parameter's type that are not plain data (empty when it is plain)."""
    seen = set() if seen is None else seen
    if annotation in JSON:
        return []
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return live_parts(typing.get_args(annotation)[0], seen)
    if origin in (typing.Union, types.UnionType, list, dict, tuple, set, frozenset, typing.Literal):
        if origin is typing.Literal:
            return []
        return [
            part for arg in typing.get_args(annotation) if arg is not ... for part in live_parts(arg, seen)
        ]
    if origin is not None:
        return [repr(annotation)]
    if not isinstance(annotation, type):
        return [repr(annotation)]
    if annotation in seen or issubclass(annotation, SCALARS + (enum.Enum, BaseModel)):
        return []
    if dataclasses.is_dataclass(annotation):
        seen.add(annotation)
        frozen = annotation.__dataclass_params__.frozen  # type: ignore[attr-defined]
        hints = typing.get_type_hints(annotation)
        inner = [part for f in dataclasses.fields(annotation) for part in live_parts(hints[f.name], seen)]
        return inner if frozen else [f"{annotation.__name__} (a mutable dataclass)", *inner]
    return [annotation.__name__]


CALLABLES = sorted(prefect_callables(), key=lambda item: item[0])


def test_the_project_has_prefect_tasks_and_flows_to_check():
    names = {name for name, _ in CALLABLES}
    assert {"flows.node_maintenance.node_maintenance", "tasks.maintenance.scan_sentinels"} <= names
    assert len(CALLABLES) >= 10


@pytest.mark.parametrize(("name", "prefect_callable"), CALLABLES, ids=[name for name, _ in CALLABLES])
def test_every_parameter_is_plain_data(name: str, prefect_callable: Task | Flow):
    hints = typing.get_type_hints(prefect_callable.fn, include_extras=True)
    hints.pop("return", None)
    live = {param: parts for param, annotation in hints.items() if (parts := live_parts(annotation))}
    assert live == {}, f"{name} takes live objects as parameters: {live}"


def test_the_check_catches_the_cluster_client():
    """The Kube handle (an API client, a lock, a call counter) is what once travelled as a parameter."""
    assert live_parts(Kube) != []
    assert live_parts(list[Kube] | None) != []
