"""The workload keys `regression` and `tests` share (`command`, `tolerations`, `volumes`), and the
`tests:` section: a list of commands run on every pull-request head and push, JUnit on their checks."""
from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from bot.core.config.fields import (
    _bool,
    _claim,
    _command_list,
    _env_name,
    _gpu,
    _image_reference,
    _label_key,
    _label_value,
    _mount_path,
    _name,
    _one_of,
    _path_pattern,
    _string,
    _toleration_key,
    parse_duration,
)
from bot.core.config.model import TEST_EVENTS, Resources, TestConfig, Volume
from bot.core.config.paths import MAX_PATTERNS
from bot.core.config.schema import _Node, _resources, _scalar_map, _string_list, _unique_names

_TEST = ("name", "image", "command", "paths", "resources", "node_selector", "tolerations", "volumes", "env",
         "timeout", "on")


def tests_section(node: _Node, images: Collection[str] | None) -> tuple[TestConfig, ...]:
    entries = node.items()
    found = [_test(entry, images) for entry in entries]
    _unique_names(entries, [t.name if t else None for t in found], "test name")
    return tuple(t for t in found if t is not None)


def _reference_or_entry(images: Collection[str] | None) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        try:
            return _image_reference(value)
        except ValueError as exc:
            known = ", ".join(f"`{n}`" for n in sorted(images or ())) or "none are defined"
            raise ValueError(f"{exc}, nor the name of an `images` entry (known: {known})") from None
    return check


def _test(node: _Node, images: Collection[str] | None) -> TestConfig | None:
    if isinstance(node.value, dict) and True in node.value:  # YAML 1.1 reads a bare `on:` key as `true`
        node.value = {("on" if key is True else key): value for key, value in node.value.items()}
    if not node.mapping(_TEST, required=("name", "image", "command"),
                        hint=' like `{name: unit, image: runtime, command: ["pytest", "-q"]}`'):
        return None
    raw_name = node.value.get("name")
    image = node.get("image", _string, "")
    build = images is not None and image in images
    if image and not build:
        image = node.get("image", _reference_or_entry(images), "")
    return TestConfig(
        name=node.get("name", _name, raw_name if isinstance(raw_name, str) else ""),
        image=image,
        command=_command(node),
        build=build,
        paths=_string_list(node, "paths", _path_pattern, max_items=MAX_PATTERNS),
        resources=_resources(node, Resources()),
        node_selector=_scalar_map(node, "node_selector", _label_key, _label_value),
        tolerations=_tolerations(node),
        volumes=_volumes(node),
        env=_scalar_map(node, "env", _env_name),
        timeout=node.get("timeout", parse_duration, 30 * 60),
        on=_string_list(node, "on", _one_of(*TEST_EVENTS), non_empty=True) or TEST_EVENTS,
    )


def _command(node: _Node) -> tuple[str, ...]:
    if not isinstance(node.value, dict) or "command" not in node.value:
        return ()
    child = node.child("command")
    if child.convert(_command_list, None) is None:
        return ()
    command = child.strings(_string)
    if command and not command[0].strip():
        child.child(0).add("the program must not be empty")
    return command


def _tolerations(node: _Node) -> tuple[dict[str, Any], ...]:
    if not isinstance(node.value, dict) or "tolerations" not in node.value:
        return ()
    return tuple(t for t in (_toleration(entry) for entry in node.child("tolerations").items()) if t is not None)


def _toleration(node: _Node) -> dict[str, Any] | None:
    keys = ("key", "operator", "value", "effect", "tolerationSeconds")
    if not node.mapping(keys, hint=" like `{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}`"):
        return None
    key = node.get("key", _toleration_key, "")
    operator = node.get("operator", _one_of("Exists", "Equal"), "Equal")
    value = node.get("value", _label_value, "")
    effect = node.get("effect", _one_of("NoSchedule", "PreferNoSchedule", "NoExecute"), "")
    seconds = node.get("tolerationSeconds", _gpu, None)
    if operator == "Exists" and value:
        node.add("must be empty with `operator: Exists`", "value")
    if not key and operator != "Exists":
        node.add("required unless `operator: Exists` (which tolerates every taint)", "key")
    if seconds is not None and effect != "NoExecute":
        node.add("only applies with `effect: NoExecute`", "tolerationSeconds")
    out: dict[str, Any] = {"operator": operator}
    out.update({k: v for k, v in (("key", key), ("value", value), ("effect", effect)) if v})
    if seconds is not None:
        out["tolerationSeconds"] = seconds
    return out


def _volumes(node: _Node) -> tuple[Volume, ...]:
    if not isinstance(node.value, dict) or "volumes" not in node.value:
        return ()
    volumes: list[Volume] = []
    for entry in node.child("volumes").items():
        if not entry.mapping(("claim", "mount_path", "read_only"), required=("claim", "mount_path"),
                             hint=" like `{claim: datasets, mount_path: /data, read_only: true}`"):
            continue
        volume = Volume(entry.get("claim", _claim, ""), entry.get("mount_path", _mount_path, ""),
                        entry.get("read_only", _bool, False))
        clash = [v for v in volumes if v.mount_path and v.mount_path.rstrip("/") == volume.mount_path.rstrip("/")]
        if clash:
            entry.add(f"`{volume.mount_path}` is mounted twice", "mount_path")
        volumes.append(volume)
    return tuple(volumes)

