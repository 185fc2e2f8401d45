"""Structured JSON logs: a fixed message, context in fields, secrets masked.

Every module logs through `get_logger(__name__)`: its `extra=` fields may use any name, because
names that `logging.LogRecord` reserves (`created`, `name`, `msg`, `args`, ...) are prefixed with
`field_` in one place (`Fields.process`) instead of raising `KeyError` at the call.
"""
from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any, TextIO

# The delivery being processed: every log line written while handling it carries its id.
delivery_id: ContextVar[str | None] = ContextVar("delivery_id", default=None)

# Attributes every LogRecord has (or gets while formatting): an `extra` key of one of these names
# makes `Logger.makeRecord` raise KeyError, so `Fields` renames them.
RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
RESERVED_PREFIX = "field_"
# GitHub tokens (ghs_, ghp_, gho_, github_pat_), bearer headers and PEM blocks never reach a log line.
_TOKEN = re.compile(r"(gh[pousr]_[A-Za-z0-9]{10,}|github_pat_[A-Za-z0-9_]{10,}|(?i:bearer|token)\s+[A-Za-z0-9._\-]{16,}"
                    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----)", re.S)


class Redactor:
    """Masks known secret values and anything shaped like a token."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _TOKEN.sub("***", text)


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (current := delivery_id.get()) is not None:
            entry["delivery_id"] = current
        entry.update({k: v for k, v in vars(record).items() if k not in RESERVED and not k.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self._redact(json.dumps(entry, default=str))


class Fields(logging.LoggerAdapter[logging.Logger]):
    """A module's logger: `extra` keys that LogRecord reserves are prefixed, never fatal."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = kwargs.get("extra")
        if extra:
            kwargs["extra"] = {(RESERVED_PREFIX + key if key in RESERVED else key): value
                               for key, value in extra.items()}
        return msg, kwargs


def get_logger(name: str) -> Fields:
    """The logger every module of the bot uses (`log = logs.get_logger(__name__)`)."""
    return Fields(logging.getLogger(name), {})


def configure(redact: Redactor, level: str = "INFO", stream: TextIO | None = None) -> None:
    """The root logger writes one JSON object per line to `stream` (stderr) at `level`."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(redact))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("markdown_it").setLevel(logging.WARNING)  # a debug line per rule per comment
