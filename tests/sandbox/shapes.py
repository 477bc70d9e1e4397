"""Check a JSON document, as it crossed the wire, against a shape of a botocore service model.

boto3 parses leniently: a member the model lacks is dropped, a wrong type is often passed through. This check
is strict, so that a stand-in's answers are held to the model: required members present, no unknown member,
types as the JSON protocol carries them (timestamps as epoch-second numbers), enum values, length and range
bounds. Patterns are not checked: App Runner's model has some that its own values do not match (ServiceId).
"""

from __future__ import annotations

from typing import Any

from botocore.model import ListShape, MapShape, Shape, StructureShape


def problems(shape: Shape, value: Any, where: str = "$") -> list[str]:
    """Every way ``value`` departs from ``shape``; empty when it conforms."""
    kind = shape.type_name
    if value is None:
        return [f"{where}: null where the model has a {kind} ({shape.name})"]
    if isinstance(shape, StructureShape):
        if not isinstance(value, dict):
            return [f"{where}: expected an object ({shape.name}), got {type(value).__name__}"]
        found = [f"{where}: missing required member {name}" for name in shape.required_members if name not in value]
        for key, item in value.items():
            member = shape.members.get(key)
            if member is None:
                found.append(f"{where}: unknown member {key!r} (not in {shape.name})")
            else:
                found += problems(member, item, f"{where}.{key}")
        return found
    if isinstance(shape, ListShape):
        if not isinstance(value, list):
            return [f"{where}: expected a list ({shape.name}), got {type(value).__name__}"]
        return _bounds(shape, len(value), where) + [
            problem for i, item in enumerate(value) for problem in problems(shape.member, item, f"{where}[{i}]")
        ]
    if isinstance(shape, MapShape):
        if not isinstance(value, dict):
            return [f"{where}: expected an object ({shape.name}), got {type(value).__name__}"]
        found = []
        for key, item in value.items():
            found += problems(shape.key, key, f"{where} key {key!r}")
            found += problems(shape.value, item, f"{where}[{key!r}]")
        return found
    if kind == "string":
        if not isinstance(value, str):
            return [f"{where}: expected a string ({shape.name}), got {type(value).__name__}"]
        if shape.enum and value not in shape.enum:
            return [f"{where}: {value!r} is not one of {shape.name}: {', '.join(shape.enum)}"]
        return _bounds(shape, len(value), where)
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            return [f"{where}: expected an integer ({shape.name}), got {value!r}"]
        return _bounds(shape, value, where)
    if kind in ("double", "float", "timestamp"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return [f"{where}: expected a number ({shape.name}), got {value!r}"]
        return []
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{where}: expected a boolean ({shape.name}), got {value!r}"]
    if kind == "blob":
        return [] if isinstance(value, str) else [f"{where}: expected base64 text ({shape.name}), got {value!r}"]
    return [f"{where}: the check does not know shapes of type {kind}"]


def _bounds(shape: Shape, size: int, where: str) -> list[str]:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and size < low:
        return [f"{where}: {size} is under the minimum {low} of {shape.name}"]
    if high is not None and size > high:
        return [f"{where}: {size} is over the maximum {high} of {shape.name}"]
    return []
