"""Structured logs: any field name is safe at the call, and no call site uses a reserved one."""
from __future__ import annotations

import ast
import io
import json
import logging
from pathlib import Path

import pytest

from bot.platform import logs

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*(ROOT / "bot").rglob("*.py"), *(ROOT / "handlers").rglob("*.py")])


def logged(level: str, call: str, **fields: object) -> dict[str, object]:
    """One line logged through `logs.get_logger` with `logs.configure`'s handler, parsed."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved, saved_level = root.handlers[:], root.level
    try:
        logs.configure(logs.Redactor(["s3cr3t-value"]), level, stream)
        getattr(logs.get_logger("flops.test"), call)("something happened", extra=fields)
    finally:
        root.handlers[:] = saved
        root.setLevel(saved_level)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    entry = json.loads(lines[0])
    assert isinstance(entry, dict)
    return entry


@pytest.mark.parametrize("level,call", [("DEBUG", "debug"), ("INFO", "info"), ("INFO", "warning")])
def test_reserved_field_names_are_prefixed_not_fatal(level: str, call: str) -> None:
    entry = logged(level, call, created=True, name="job-1", msg="x", args=[1], message="m", job="flops-build-1")
    assert entry["message"] == "something happened"
    assert entry["logger"] == "flops.test"
    assert (entry["field_created"], entry["field_name"], entry["field_msg"], entry["field_args"],
            entry["field_message"], entry["job"]) == (True, "job-1", "x", [1], "m", "flops-build-1")


def test_values_are_masked_and_unserialisable_values_stringified() -> None:
    entry = logged("INFO", "info", detail="prefix s3cr3t-value suffix", path=Path("/tmp/x"))
    assert entry["detail"] == "prefix *** suffix" and entry["path"] == "/tmp/x"
    assert logged("INFO", "info", secret="anything")["secret"] == "***"  # a field so named: masked by shape


def _extra_keys(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "extra" and isinstance(keyword.value, ast.Dict):
                    found += [(key.lineno, key.value) for key in keyword.value.keys
                              if isinstance(key, ast.Constant) and isinstance(key.value, str)]
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_log_call_names_a_reserved_field(path: Path) -> None:
    """`extra={"created": ...}` crashed every push build at INFO (issue 14); `Fields` now renames
    such keys, and this keeps call sites from relying on that: write a name of its own."""
    tree = ast.parse(path.read_text(), str(path))
    reserved = [(line, key) for line, key in _extra_keys(tree) if key in logs.RESERVED]
    assert not reserved, f"{path.name}: log fields named like LogRecord attributes: {reserved}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_logs_through_get_logger(path: Path) -> None:
    if path.name == "logs.py":
        return
    tree = ast.parse(path.read_text(), str(path))
    direct = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call)
              and isinstance(node.func, ast.Attribute) and node.func.attr == "getLogger"]
    assert not direct, f"{path.name}:{direct}: use `log = logs.get_logger(__name__)`"
