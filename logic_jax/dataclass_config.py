"""Frozen dataclass configs from dicts or ml_collections ConfigDicts, refusing unknown keys."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


def from_mapping(cls: type[T], values: Mapping[str, Any], error: type[Exception], what: str) -> T:
    """``cls(**values)``; a key that is no field of ``cls`` raises ``error`` naming it."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise error(f"unknown {what} config key(s) {unknown}; known: {sorted(names)}")
    return cls(**dict(values))
