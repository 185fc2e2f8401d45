"""Text helpers shared by every report: user text made safe to quote, durations spelled one way."""
from __future__ import annotations


def shown(text: str, limit: int = 60) -> str:
    """User text safe inside a code span of a message: on one line, no backticks, bounded length."""
    text = text.replace("\n", "\\n").replace("`", "'")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def duration(seconds: int) -> str:
    """`90s`, `30m`, `1h`, `1h30m`: the compact spelling `.github/flops.yml` accepts back."""
    if seconds % 60 or not seconds:
        return f"{seconds}s"
    hours, minutes = divmod(seconds // 60, 60)
    return (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
