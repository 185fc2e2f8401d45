"""JUnit XML in, a test report out: sans-I/O, safe and bounded.

The shapes in use share `testsuites` / `testsuite` / `testcase` with a `failure`, `error` or
`skipped` child: pytest (`--junitxml`), unittest-xml-reporting, JUnit 5 / Maven Surefire and Go's
`go-junit-report`. Several files are merged. XML is parsed with defusedxml (no entity expansion,
no DTD fetched), at most MAX_BYTES in all.

- `parse(files)` -> `Report`: every test case with its status, time, first line of the message
  and, where the file says so, the source location (`file`/`line` attributes, else the last
  frame of the traceback that is a file of the repository);
- `Report.title`: `2 failed, 318 passed, 4 skipped in 3m12s`;
- `Report.table(also_failing, base)`: the failed and errored tests as a markdown table (every
  cell escaped), at most TABLE_ROWS rows then a count;
- `Report.annotations()`: check-run annotations, `annotation_level: failure`.
"""
from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from bot.core.text import escape

MAX_BYTES = 50 * 1024 * 1024  # all JUnit files of one run together
TABLE_ROWS = 50
MESSAGE_MAX = 4000  # an annotation's message (GitHub allows 64 KB; a traceback's end is what helps)
FAILED, ERROR, SKIPPED, PASSED = "failed", "error", "skipped", "passed"

# `tests/test_x.py:14: AssertionError` (pytest), `File "/workspace/tests/x.py", line 14` (Python),
# `at com.x.FooTest.testA(FooTest.java:12)` (JVM), `    foo_test.go:12: want 1` (Go).
# Each with whether its file is a path from the repository root (Python, pytest) or a bare file
# name (JVM, Go), which is located only when the repository's file list is known.
_FRAMES = (
    (re.compile(r'File "(?P<file>[^"\n]+)", line (?P<line>\d+)'), True),
    (re.compile(r"^(?P<file>[^\s:()\"']+\.[A-Za-z0-9]+):(?P<line>\d+):", re.M), True),
    (re.compile(r"\((?P<file>[^\s:()]+\.(?:java|kt|scala|groovy)):(?P<line>\d+)\)"), False),
    (re.compile(r"^\s+(?P<file>[^\s:()]+_test\.go):(?P<line>\d+):", re.M), False),
)
_WORKSPACE = ("/workspace/", "./")
_BARE = (".go", ".java", ".kt", ".scala", ".groovy")


class JUnitError(ValueError):
    """A results file that is not JUnit XML (the report shows why)."""


@dataclass(frozen=True, slots=True)
class Case:
    id: str  # `classname::name`
    status: str  # FAILED | ERROR | SKIPPED | PASSED
    time: float
    message: str = ""  # first line of the failure's message
    detail: str = ""  # the failure's text (a traceback), bounded
    file: str | None = None
    line: int | None = None


@dataclass(frozen=True, slots=True)
class Report:
    cases: tuple[Case, ...]
    time: float

    def count(self, status: str) -> int:
        return sum(1 for case in self.cases if case.status == status)

    @property
    def broken(self) -> tuple[Case, ...]:
        """The failed and errored tests, in file order."""
        return tuple(case for case in self.cases if case.status in (FAILED, ERROR))

    @property
    def title(self) -> str:
        counts = [(self.count(FAILED), "failed"), (self.count(ERROR), "errors"), (self.count(PASSED), "passed"),
                  (self.count(SKIPPED), "skipped")]
        parts = [f"{n} {word}" for n, word in counts if n or word == "passed"]
        return f"{', '.join(parts)} in {elapsed(self.time)}"

    def table(self, also_failing: Collection[str] = (), base: str = "") -> str:
        """The failed/errored tests (id, first line of the message, duration), at most TABLE_ROWS."""
        broken = self.broken
        if not broken:
            return ""
        rows = []
        for case in broken[:TABLE_ROWS]:
            mark = f" *(also failing on {escape(base, 60)})*" if case.id in also_failing else ""
            what = "error: " if case.status == ERROR else ""
            rows.append(f"| {escape(case.id, 300)}{mark} | {what}{escape(case.message, 300)} | {elapsed(case.time)} |")
        more = len(broken) - TABLE_ROWS
        tail = f"\n\n… and {more} more failed or errored test{'s' if more != 1 else ''}." if more > 0 else ""
        return "| test | message | duration |\n|---|---|---|\n" + "\n".join(rows) + tail

    def annotations(self) -> list[dict[str, Any]]:
        """One `failure` annotation per failed/errored test that has a location."""
        found = []
        for case in self.broken:
            if case.file is None or case.line is None:
                continue
            found.append({"path": case.file, "start_line": case.line, "end_line": case.line,
                          "annotation_level": "failure", "title": case.id[:255],
                          "message": (case.detail or case.message or case.status)[-MESSAGE_MAX:]})
        return found


def elapsed(seconds: float) -> str:
    """`3m12s`, `12s`, `0.4s`, `1h2m3s`: a test run's duration."""
    if not math.isfinite(seconds) or seconds < 0:
        return "0s"
    if seconds < 10:
        return f"{seconds:.1f}s".replace(".0s", "s")
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n) or "0s"


def parse(files: Iterable[tuple[str, bytes]], repo_files: Collection[str] | None = None) -> Report:
    """Every test case of the JUnit files (`(name, bytes)`), merged; JUnitError for one that is
    not JUnit XML or when they exceed MAX_BYTES. `repo_files`: the commit's paths, to keep only
    locations inside the repository (None: any relative path)."""
    cases: list[Case] = []
    total_time, size = 0.0, 0
    for name, data in files:
        size += len(data)
        if size > MAX_BYTES:
            raise JUnitError(f"the JUnit files are larger than {MAX_BYTES // (1024 * 1024)} MB together")
        root = _root(name, data)
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        if root.tag == "testsuites" and _number(root.get("time")) is not None:
            total_time += _number(root.get("time")) or 0.0
            timed = True
        else:
            timed = False
        for suite in suites:
            if not timed and not any(child.tag == "testsuite" for child in suite):
                total_time += _number(suite.get("time")) or 0.0
            cases.extend(_case(el, suite, repo_files) for el in suite if el.tag == "testcase")
    if total_time == 0.0:
        total_time = sum(case.time for case in cases)
    return Report(tuple(cases), total_time)


def _root(name: str, data: bytes) -> ET.Element:
    try:
        root: ET.Element = SafeET.fromstring(data, forbid_dtd=True)
    except DefusedXmlException:
        raise JUnitError(f"`{name}` declares a DTD or entities, which are not read") from None
    except ET.ParseError as exc:
        raise JUnitError(f"`{name}` is not XML ({exc})") from None
    if root.tag not in ("testsuites", "testsuite"):
        raise JUnitError(f"`{name}` is not JUnit XML: its root is `<{root.tag[:40]}>`, not `<testsuites>` "
                         f"or `<testsuite>`")
    return root


def _number(text: str | None) -> float | None:
    try:
        value = float((text or "").replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _case(el: ET.Element, suite: ET.Element, repo_files: Collection[str] | None) -> Case:
    classname = el.get("classname") or suite.get("name") or ""
    name = el.get("name") or "?"
    case_id = f"{classname}::{name}" if classname else name
    time = _number(el.get("time")) or 0.0
    status, outcome = PASSED, None
    for child in el:
        if child.tag in ("failure", "error"):
            status, outcome = (FAILED if child.tag == "failure" else ERROR), child
            break
        if child.tag == "skipped":
            status = SKIPPED
    if outcome is None:
        return Case(case_id, status, time)
    detail = (outcome.text or "").strip()[-20_000:]
    message = _first_line(outcome.get("message") or "") or _first_line(detail) or outcome.get("type") or ""
    file, line = _location(el, classname, detail, repo_files)
    return Case(case_id, status, time, message[:1000], detail, file, line)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _location(el: ET.Element, classname: str, detail: str,
              repo_files: Collection[str] | None) -> tuple[str | None, int | None]:
    """The traceback's last frame inside the repository, else the testcase's `file`/`line`."""
    for pattern, rooted in _FRAMES:
        if not rooted and repo_files is None:
            continue
        frames = [(m.group("file"), int(m.group("line"))) for m in pattern.finditer(detail)]
        for file, line in reversed(frames):
            path = _in_repo(file, classname, repo_files)
            if path is not None and line > 0:
                return path, line
    attr_file, attr_line = el.get("file") or "", el.get("line") or ""
    path = _in_repo(attr_file, classname, repo_files) if attr_file else None
    if path is not None and attr_line.isdigit():
        return path, max(1, int(attr_line))
    return None, None


def _in_repo(file: str, classname: str, repo_files: Collection[str] | None) -> str | None:
    """`file` as a repository path; a bare file name (Go, the JVM) found by its package."""
    path = file
    for prefix in _WORKSPACE:
        path = path.removeprefix(prefix)
    if path.startswith("/") or ".." in path.split("/") or "\\" in path or not path:
        return None
    if repo_files is None:  # a bare JVM or Go file name is no path from the repository root
        return None if "/" not in path and path.endswith(_BARE) else path
    if path in repo_files:
        return path
    if "/" in path:
        return None
    package = classname.replace(".", "/").rsplit("/", 1)[0] if "." in classname else classname
    ends = [f for f in repo_files if f == path or f.endswith("/" + path)]
    within = [f for f in ends if package and f"/{package}/" in f"/{f}"]
    chosen = within or ends
    return chosen[0] if len(chosen) == 1 else None
