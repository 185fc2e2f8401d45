"""The yq path grammar: one parser and its spelling, for `field` in flops.yml and for manifests.

    path     = "." | step+
    step     = "." key | "." bracket | bracket
    key      = plain | quoted                  plain: letters, digits, `_`, `-`
    bracket  = "[" index "]" | "[" quoted "]"  index: a whole number, negative counts from the end
    quoted   = '"' ... '"' | "'" ... "'"       a backslash escapes the next character

`.spec.containers[0].image`, `."app.kubernetes.io/name"`, `.a["b.c"]`, `.a['b']`, `.[0]`,
`.a.[0]` and `.a[-1]` (the last item, as yq reads it) are paths; `.` alone is the document root
(the empty path). Errors name the column (1-based) where the path stops making sense.
"""
from __future__ import annotations

import re

from bot.core.text import shown

Path = tuple[str | int, ...]

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_INDEX = re.compile(r"-?[0-9]+")
_HINT = "write keys as `.key` or `.\"odd.key\"` and indexes as `[0]`"


def parse(text: str) -> Path:
    """The segments of a yq path: `.spec.containers[0].image` -> ("spec", "containers", 0, "image")."""
    if not isinstance(text, str) or not text.startswith("."):
        raise _error(text, 0, "a yq path starts with `.`, like `.spec.template.spec.containers[0].image`")
    segments: list[str | int] = []
    i = 1 if text.startswith(".[") or text == "." else 0
    while i < len(text):
        segment: str | int
        if text[i] == "[":
            segment, i = _bracket(text, i)
        elif text[i] == ".":
            if text.startswith("[", i + 1):  # `.a.[0]`: the dot before a bracket is optional
                i += 1
                continue
            segment, i = _key(text, i + 1)
        else:
            raise _error(text, i, f"unexpected `{shown(text[i:])}`; {_HINT}")
        segments.append(segment)
    return tuple(segments)


def format(path: Path) -> str:  # noqa: A001 - the module's own verb, used as `yq.format`
    """The yq spelling of `path` (what `parse` reads back as `path`)."""
    out = ""
    for segment in path:
        if isinstance(segment, int):
            out += f"[{segment}]"
        elif _PLAIN_KEY.fullmatch(segment):
            out += f".{segment}"
        else:
            out += '."' + segment.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return out if out.startswith(".") else "." + out


def _key(text: str, i: int) -> tuple[str, int]:
    if i < len(text) and text[i] in "\"'":
        return _quoted(text, i)
    match = _PLAIN_KEY.match(text, i)
    if match:
        return match.group(), match.end()
    if i == len(text) or text[i] == ".":
        raise _error(text, i, f"empty key; {_HINT}")
    raise _error(text, i, f"unexpected `{shown(text[i:])}`; {_HINT}")


def _bracket(text: str, i: int) -> tuple[str | int, int]:
    if text[i + 1:i + 2] in ("\"", "'"):
        key, j = _quoted(text, i + 1)
        if text[j:j + 1] != "]":
            raise _error(text, j, "expected `]` after the quoted key")
        return key, j + 1
    match = _INDEX.match(text, i + 1)
    if not match or text[match.end():match.end() + 1] != "]":
        raise _error(text, i, f"unexpected `{shown(text[i:])}`; an index is like `[0]` (or `[-1]`, the last) "
                              f"and a quoted key like `[\"a.b\"]`")
    return int(match.group()), match.end() + 1


def _quoted(text: str, i: int) -> tuple[str, int]:
    quote, j, chars = text[i], i + 1, []
    while j < len(text) and text[j] != quote:
        if text[j] == "\\" and j + 1 < len(text):
            j += 1
        chars.append(text[j])
        j += 1
    if j >= len(text):
        raise _error(text, i, "unterminated quote")
    if not chars:
        raise _error(text, i, "empty key")
    return "".join(chars), j + 1


def _error(text: object, i: int, problem: str) -> ValueError:
    quoted = shown(text) if isinstance(text, str) else repr(text)
    return ValueError(f"bad yq path `{quoted}`: {problem} (column {i + 1})")
