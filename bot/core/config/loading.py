"""YAML in: the Contents API's text, the size limit, syntax errors with their line, duplicate keys
(PyYAML would silently keep the last), and the top level as a mapping."""
from __future__ import annotations

import base64
import binascii
from typing import Any

import yaml

from bot.core.config.fields import _kind
from bot.core.config.model import CONFIG_PATH, ConfigError, Problem
from bot.core.text import shown

MAX_BYTES = 256 * 1024
# libyaml's C parser when PyYAML was built with it (the wheels are): the pure-Python one takes seconds
# for a hostile file of MAX_BYTES; same nodes, same marks, same errors.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def decode_content(data: Any) -> str:
    """The text of a Contents API answer."""
    if not isinstance(data, dict) or data.get("type", "file") != "file" or not isinstance(data.get("content"), str):
        raise ConfigError([Problem("", f"{CONFIG_PATH} is not a file; make it a regular YAML file.")])
    try:
        return base64.b64decode(data["content"]).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ConfigError([Problem("", f"{CONFIG_PATH} is not UTF-8 text; save it as UTF-8.")]) from None


def load_yaml(text: str) -> dict[str, Any]:
    """The top-level mapping, or `ConfigError` for a file that is not one."""
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise ConfigError([Problem("", f"the file is larger than {MAX_BYTES // 1024} KiB; flops.yml is a "
                                       f"small config file, keep it under that.")])
    try:
        data, duplicates = _read_yaml(text)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([Problem("", _yaml_message(exc))]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem("", f"YAML syntax error: {exc}")]) from None
    except RecursionError:
        raise ConfigError([Problem("", "YAML nests too deeply; flatten the file.")]) from None
    except (ValueError, TypeError, OverflowError) as exc:  # PyYAML constructors: `2024-13-45`, huge ints
        raise ConfigError([Problem("", f"YAML value cannot be read ({shown(str(exc), 100)}); quote it "
                                       f"if it is meant as text.")]) from None
    if duplicates:
        raise ConfigError(duplicates)
    if data is None:
        raise ConfigError([Problem("", "the file is empty; start with `version: 1` and `registry:` "
                                       "(see examples/flops.yml).")])
    if not isinstance(data, dict):
        raise ConfigError([Problem("", f"the top level must be a mapping of keys (`registry: ...`), "
                                       f"got {_kind(data)}.")])
    return data


def _read_yaml(text: str) -> tuple[Any, list[Problem]]:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        duplicates = _duplicate_keys(node)  # before constructing: merge keys (`<<`) rewrite the nodes
        return (None if node is None else loader.construct_document(node)), duplicates
    finally:
        loader.dispose()


def _duplicate_keys(root: Any) -> list[Problem]:
    """Keys given twice in one mapping (PyYAML would silently keep the last)."""
    problems: list[Problem] = []
    stack, seen_nodes = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes or not isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
            continue
        keys: set[tuple[str, str]] = set()
        for key_node, value_node in node.value:
            stack.append(value_node)
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if (key_node.tag, key_node.value) in keys:
                mark = key_node.start_mark
                problems.append(Problem("", f"line {mark.line + 1}, column {mark.column + 1}: duplicate key "
                                            f"`{shown(key_node.value)}`; keep only one."))
            keys.add((key_node.tag, key_node.value))
    return problems


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = "; ".join(part for part in (exc.context, exc.problem) if part)
    return f"YAML syntax error{where}: {what or 'invalid YAML'}"
