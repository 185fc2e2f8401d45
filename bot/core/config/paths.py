"""Path globs of `images[].paths`: which changed files make an image build."""
from __future__ import annotations

import functools
import re


def path_matches(pattern: str, path: str) -> bool:
    """gitignore-lite: a pattern without `/` matches a file or directory name anywhere; with
    `/` it is anchored at the repository root; `**` spans any number of directories; a
    pattern matching a directory matches everything below it."""
    regex = pattern_regex(pattern)
    parts = path.strip("/").split("/")
    return any(regex.fullmatch("/".join(parts[:n])) for n in range(len(parts), 0, -1))


@functools.lru_cache(maxsize=1024)
def pattern_regex(pattern: str) -> re.Pattern[str]:
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
    return re.compile("".join(out), re.DOTALL)


def _glob_segment(segment: str) -> str:
    out, i = [], 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (end := segment.find("]", i + 2 if segment[i + 1:i + 2] in ("!", "^") else i + 1)) > i:
            inner = segment[i + 1:end]
            negate = inner[:1] in ("!", "^")
            inner = inner[1:] if negate else inner
            out.append(("[^/" if negate else "[") + inner.replace("\\", "\\\\").replace("^", "\\^") + "]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)
