"""The schema walker: a YAML value at its key path (`_Node`), collecting every problem instead of
stopping at the first, and the generic shapes (lists of strings, scalar maps, resources)."""
from __future__ import annotations

import difflib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar

from bot.core.config.fields import _cpu, _gpu, _kind, _memory, _scalar_text
from bot.core.config.model import Problem, Resources
from bot.core.text import shown

T = TypeVar("T")


_MISSING: Any = object()


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


@dataclass(slots=True)
class _Node:
    """A YAML value at a key path, with the list problems are collected into."""

    value: Any
    path: str
    problems: list[Problem]

    def add(self, message: str, key: object = None) -> None:
        self.problems.append(Problem(self.path if key is None else _join(self.path, key), message))

    def child(self, key: str | int) -> _Node:
        path = f"{self.path}[{key}]" if isinstance(key, int) else _join(self.path, key)
        value = (self.value[key] if isinstance(self.value, dict) else
                 self.value[key] if isinstance(self.value, list) and isinstance(key, int) else _MISSING)
        return _Node(value, path, self.problems)

    def mapping(self, keys: Collection[str], required: Collection[str] = (), hint: str = "") -> bool:
        """Check this is a mapping of known keys with the required ones; False when not a mapping."""
        if not isinstance(self.value, dict):
            self.add(f"must be a mapping{hint}, got {_kind(self.value)}")
            return False
        for key in self.value:
            if not isinstance(key, str):
                self.add(f"keys must be strings, got {_kind(key)}", shown(str(key)))
            elif key not in keys:
                self.add(_unknown_key(key, keys), key)
        for key in required:
            if key not in self.value:
                self.add("required", key)
        return True

    def get(self, key: str, convert: Callable[[Any], T], default: T) -> T:
        """`convert(value)` of `key`, or `default` when absent or invalid (the problem recorded)."""
        if not isinstance(self.value, dict) or key not in self.value:
            return default
        return self.child(key).convert(convert, default)

    def convert(self, convert: Callable[[Any], T], default: T) -> T:
        if self.value is None:
            self.add("empty value; give a value or remove the key to get the default")
            return default
        try:
            return convert(self.value)
        except ValueError as exc:
            self.add(str(exc))
            return default

    def items(self) -> list[_Node]:
        """The entries of a list; a problem when it is not one."""
        if not isinstance(self.value, list):
            self.add(f"must be a list, got {_kind(self.value)}")
            return []
        return [self.child(i) for i in range(len(self.value))]

    def strings(self, convert: Callable[[Any], T]) -> tuple[T, ...]:
        """The valid entries of a list of scalars; a problem for each invalid one."""
        values = (item.convert(convert, _MISSING) for item in self.items())
        return tuple(value for value in values if value is not _MISSING)


def _unknown_key(key: str, keys: Collection[str]) -> str:
    lower = {k.lower(): k for k in keys}
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6) or (
        [lower[key.lower()]] if key.lower() in lower else [])
    if close:
        return f"unknown key; did you mean `{close[0]}`?"
    return "unknown key; expected one of " + ", ".join(f"`{k}`" for k in sorted(keys))


def _string_list(node: _Node, key: str, convert: Callable[[Any], str], *, non_empty: bool = False,
                 max_items: int | None = None) -> tuple[str, ...]:
    if not isinstance(node.value, dict) or key not in node.value:
        return ()
    child = node.child(key)
    if child.value is None or isinstance(child.value, str):
        example = f"[{child.value}]" if isinstance(child.value, str) else "[main]"
        child.add(f"must be a list, like `{shown(example)}`")
        return ()
    if max_items is not None and isinstance(child.value, list) and len(child.value) > max_items:
        child.add(f"lists {len(child.value)} patterns; at most {max_items} are allowed (a directory pattern "
                  f"like `server/**` covers everything below it)")
        return ()
    values = child.strings(convert)
    if non_empty and child.value == []:
        child.add("must not be empty; remove the key to use the default")
    seen: set[str] = set()
    for value in values:
        if value in seen:
            child.add(f"`{shown(value)}` is listed twice")
        seen.add(value)
    return values


def _unique_names(nodes: list[_Node], names: list[str | None], what: str) -> None:
    seen: dict[str, int] = {}
    for i, (node, name) in enumerate(zip(nodes, names)):
        if not name:
            continue
        if name in seen:
            node.add(f"duplicate {what} `{name}`: already {node.path.rsplit('[', 1)[0]}[{seen[name]}]", "name")
        seen.setdefault(name, i)


def _scalar_map(node: _Node, key: str, check_key: Callable[[str], str],
                convert: Callable[[Any], str] = _scalar_text) -> dict[str, str]:
    if not isinstance(node.value, dict) or key not in node.value:
        return {}
    child = node.child(key)
    if not isinstance(child.value, dict):
        child.add(f"must be a mapping like `{{NAME: value}}`, got {_kind(child.value)}")
        return {}
    out: dict[str, str] = {}
    for name in child.value:
        if not isinstance(name, str):
            child.add(f"keys must be strings, got {_kind(name)}", shown(str(name)))
            continue
        try:
            check_key(name)
        except ValueError as exc:
            child.add(str(exc), name)
            continue
        value = child.child(name).convert(convert, _MISSING)
        if value is not _MISSING:
            out[name] = value
    return out


def _resources(node: _Node, default: Resources) -> Resources:
    if not isinstance(node.value, dict) or "resources" not in node.value:
        return default
    child = node.child("resources")
    if not child.mapping(("cpu", "memory", "gpu"), hint=" like `{cpu: \"1\", memory: 2Gi}`"):
        return default
    return Resources(cpu=child.get("cpu", _cpu, default.cpu), memory=child.get("memory", _memory, default.memory),
                     gpu=child.get("gpu", _gpu, default.gpu))
