"""Path globs of `images[].paths`: which changed files make an image build, in linear time.

A pattern is translated to a regex and run by RE2 (google-re2), which never backtracks: a path
costs time proportional to its length, whatever the pattern. The former `re` translation of the
same regex backtracked exponentially: `a*a*a*a*a*a*a*a*b` against a 40-character name took 0.35 s,
against a 255-character one days. Tag patterns go through `fnmatch`, which puts every `*` but the
last in an atomic group since Python 3.11 (no backtracking either); both kinds are capped in
number and length by `MAX_PATTERNS` and `MAX_PATTERN_LENGTH`.
"""
from __future__ import annotations

import fnmatch
import functools
import re
from typing import Any

import re2

MAX_PATTERNS = 100  # per list (`images[].paths`, `tags`)
MAX_PATTERN_LENGTH = 256
_OPTIONS = re2.Options()
_OPTIONS.dot_nl = True  # a file name may hold a newline
_OPTIONS.log_errors = False  # a bad class is the user's config error, not the bot's stderr
_OPTIONS.max_mem = 1 << 20  # per pattern; past it RE2 runs its (still linear) NFA instead of the DFA


class GlobError(ValueError):
    """A pattern RE2 cannot compile (a bad `[...]` class such as `[z-a]`)."""


def tag_matches(tag: str, patterns: tuple[str, ...]) -> bool:
    """Does the git tag `tag` match one of the `tags` patterns (fnmatch, case-sensitive)?"""
    return any(fnmatch.fnmatchcase(tag, pattern) for pattern in patterns)


def path_matches(pattern: str, path: str) -> bool:
    """gitignore-lite: a pattern without `/` matches a file or directory name anywhere; with
    `/` it is anchored at the repository root; `**` spans any number of directories; a
    pattern matching a directory matches everything below it."""
    path = path.strip("/")
    if not path.isascii():  # RE2 reads UTF-8: a lone surrogate (JSON allows one) becomes one `?`
        path = path.encode("utf-8", "replace").decode("utf-8")
    return compile_glob(pattern).fullmatch(path) is not None


@functools.lru_cache(maxsize=256)
def compile_glob(pattern: str) -> Any:
    """The RE2 regex of the pattern, to `fullmatch` a whole path; `GlobError` when it has none."""
    try:
        return re2.compile(glob_regex(pattern) + "(?:/.*)?", options=_OPTIONS)  # (...) anything below
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise GlobError(str(reason)) from None
    except UnicodeEncodeError:  # a lone surrogate, from YAML's `"\ud800"` escape with the pure-Python loader
        raise GlobError("not valid Unicode text") from None


def glob_regex(pattern: str) -> str:
    """The regex (RE2 and `re` syntax alike) of the paths the pattern names, not those below them."""
    body = pattern.removeprefix("./")
    anchored = "/" in body.rstrip("/")
    body = body.lstrip("/") + ("**" if body.endswith("/") else "")
    segments = body.split("/")
    out = [] if anchored else ["(?:.*/)?"]
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
        else:
            out.append(_glob_segment(segment) + ("" if last else "/"))
    return "".join(out)


def _glob_segment(segment: str) -> str:
    return "".join(_tokens(segment))


def _tokens(segment: str) -> list[str]:
    """The regex of each piece: `*`, `?`, a `[...]` class, a literal character."""
    out, i = [], 0
    while i < len(segment):
        char = segment[i]
        if char in "*?":
            out.append("[^/]*" if char == "*" else "[^/]")
        elif char == "[" and (end := segment.find("]", i + 2 if segment[i + 1:i + 2] in ("!", "^") else i + 1)) > i:
            inner = segment[i + 1:end]
            negate = inner[:1] in ("!", "^")
            inner = inner[1:] if negate else inner
            out.append(("[^/" if negate else "[") + inner.replace("\\", "\\\\").replace("^", "\\^") + "]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return out
