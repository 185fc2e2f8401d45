"""Text helpers shared by every report: user text made safe to quote, durations spelled one way.

Everything a workload or a user wrote (metric names and values, link keys and URLs, file names,
history rows, log tails, Kubernetes messages) goes through one of these before it reaches
markdown that GitHub renders:

- `escape`: inline text with no markdown structure, no HTML, no `@` mention, no autolink, one line,
  bounded length;
- `link`: a markdown link only for an `http(s)` URL without whitespace or control characters, else
  both parts as escaped text;
- `code_block`: a fenced block that its content cannot close, bounded length (the end is kept);
- `shown`: short text inside a code span; `plain`: escaped text back to plain (check-run titles);
- `clip`: every comment body and check-run `summary`/`text` fits GitHub's 65,535-character limit,
  with a visible note when cut.
"""
from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import urlsplit

MAX_BODY = 65_535  # GitHub rejects a comment body or a check run's output.summary / output.text over this
TRUNCATED = "… (truncated: GitHub allows {limit:,} characters here)"
INLINE = 200  # default cap of one escaped value (a metric name, a file name, a link label)
URL_MAX = 2000
TAIL_MAX = 20_000  # a log tail's share of a check run's text
ZWSP = "\u200b"  # zero-width space: breaks `@team` mentions and `http://` autolinks, invisible when rendered

# Characters with a meaning in CommonMark/GFM (and GitHub's `$` math): each gets a backslash.
_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~&$])")
# C0/C1 controls, and the bidi overrides that make text read differently from what it is.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_NUMBER = re.compile(r"[-+]?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_BLANKS = re.compile(r"[\t\n\r\v\f\u2028\u2029]+")
_URL_BAD = re.compile("[\\s\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069<>\"'`\\\\]")


def shown(text: str, limit: int = 60) -> str:
    """User text safe inside a code span of a message: on one line, no backticks, bounded length."""
    text = _CONTROL.sub("", text.replace("\n", "\\n")).replace("`", "'")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def escape(value: object, limit: int = INLINE) -> str:
    """`value` as inline markdown text that renders exactly as written: one line, no structure,
    no HTML, no mention, no autolink; cut to `limit` characters (before escaping) with `…`."""
    text = _BLANKS.sub(" ", _CONTROL.sub("", str(value)))
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    if _NUMBER.fullmatch(text):  # 0.912, -1e-05: nothing to escape, and they stay readable in the raw body
        return text
    text = _PUNCTUATION.sub(r"\\\1", text)
    text = text.replace("@", "@" + ZWSP).replace("://", ":" + ZWSP + "//")  # `@team`, `https://`
    return re.sub(r"(?i)\bwww\\\.", lambda m: m.group(0)[:3] + ZWSP + m.group(0)[3:], text)


def plain(markdown: str) -> str:
    """Escaped markdown back as the text it renders to, for plain-text fields (a check run's
    title): backslash escapes and zero-width spaces dropped, code-span backticks kept."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace(ZWSP, "")


def safe_url(value: object) -> str | None:
    """`value` when it is an absolute http(s) URL with a host and no whitespace, control or quoting
    characters; else None. `(` and `)` are percent-encoded so the URL cannot end a markdown link."""
    if not isinstance(value, str) or len(value) > URL_MAX or _URL_BAD.search(value):
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return value.replace("(", "%28").replace(")", "%29")


def link(label: object, url: object, limit: int = INLINE) -> str:
    """`[label](url)` for a safe http(s) URL; otherwise `label: url` as escaped text (never a link)."""
    safe = safe_url(url)
    if safe is None:
        return f"{escape(label, limit)}: {escape(url, limit)}"
    return f"[{escape(label, limit)}]({safe})"


def code_block(text: str, limit: int = TAIL_MAX) -> str:
    """`text` (a log tail) in a fenced block its content cannot close, control characters dropped;
    beyond `limit` characters the start is cut, and a note says so above the block."""
    text = re.sub("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", "", text).rstrip()
    note = ""
    if len(text) > limit:
        note = f"… (truncated: the first {len(text) - limit:,} characters are not shown)\n\n"
        text = text[-limit:]
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{note}{fence}text\n{text}\n{fence}"


def clip(text: str, limit: int = MAX_BODY) -> str:
    """`text` cut to at most `limit` characters, ending with a visible note when it was cut."""
    if len(text) <= limit:
        return text
    note = "\n\n" + TRUNCATED.format(limit=limit)
    return text[: limit - len(note)] + note


def timestamp(stamp: str) -> float:
    """Seconds since the epoch of an RFC 3339 time as GitHub and Kubernetes write it (`...Z`)."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def duration(seconds: int) -> str:
    """`90s`, `30m`, `1h`, `1h30m`: the compact spelling `.github/flops.yml` accepts back."""
    if seconds % 60 or not seconds:
        return f"{seconds}s"
    hours, minutes = divmod(seconds // 60, 60)
    return (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
