"""Structured JSON logs: a fixed message, context in fields, secrets masked.

Every module logs through `get_logger(__name__)`: its `extra=` fields may use any name, because
names that `logging.LogRecord` reserves (`created`, `name`, `msg`, `args`, ...) are prefixed with
`field_` in one place (`Fields.process`) instead of raising `KeyError` at the call.
"""
from __future__ import annotations

import base64
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any, TextIO

# The delivery being processed: every log line written while handling it carries its id.
delivery_id: ContextVar[str | None] = ContextVar("delivery_id", default=None)

# Attributes every LogRecord has (or gets while formatting): an `extra` key of one of these names
# makes `Logger.makeRecord` raise KeyError, so `Fields` renames them.
RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
RESERVED_PREFIX = "field_"
MASK = "***"
# Credential shapes masked wherever they appear, known or not (every pattern is linear: bounded
# repeats, no nested unbounded ones, so a hostile 100k-character line costs milliseconds).
_KEYWORD = r"(?:passw(?:or)?d|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?" \
           r"|auth(?![a-z]))"
_SHAPES: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    # PEM blocks (a key printed whole, or cut by the tail's end; a tail that starts inside one: `_headless_pem`)
    (re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}-----.*?(?:-----END [A-Z0-9 ]{0,40}-----|\Z)", re.S), MASK),
    # GitHub tokens
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{10,}|github_pat_[A-Za-z0-9_]{10,})"), MASK),
    # AWS access key ids
    (re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA)[A-Z0-9]{16}\b"), MASK),
    # Authorization headers, and bearer / basic / token credentials anywhere
    (re.compile(r"(?i)\b((?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*[\"']?(?:(?:bearer|basic|token|digest|negotiate)"
                r"[ \t]+)?)[^\s\"',]+"), r"\1" + MASK),
    (re.compile(r"(?i)\b(bearer|token)([ \t]+)[A-Za-z0-9._~+/=-]{16,}"), r"\1\2" + MASK),
    (re.compile(r"(?i)\b(basic)([ \t]+)(?=[A-Za-z0-9+/]{0,200}[0-9+/=])[A-Za-z0-9+/]{8,}={0,2}"), r"\1\2" + MASK),
    # scheme://user:password@host and scheme://token@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]{1,20}://)[^\s/@\"'<>]{1,256}@"), r"\1" + MASK + "@"),
    # secret-looking assignments: PASSWORD=..., "token": "...", secret: ..., AWS_SECRET_ACCESS_KEY=...,
    # dockerconfigjson "auth": "..."
    (re.compile(r"(?i)(?<![\w.-])([\w.-]{0,40}" + _KEYWORD + r"[\w.-]{0,40}[\"']?[ \t]*[:=][ \t]*)"
                r"(?:(\")[^\"\n]*\"|(')[^'\n]*'|[^\s\"',;&{}\[\]]+)"),
     lambda m: m.group(1) + (q := m.group(2) or m.group(3) or "") + MASK + q),
)
_PEM_END = re.compile(r"-----END [A-Z0-9 ]{0,40}-----")
_PEM_BODY = re.compile(r"[A-Za-z0-9+/=]{16,}")


class Redactor:
    """Masks known secret values (and their base64), then anything shaped like a credential."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = {s for s in secrets if s and len(s) >= 4}
        values |= {base64.b64encode(s.encode()).decode() for s in values}
        self._secrets = sorted(values, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        for pattern, replacement in _SHAPES:
            text = pattern.sub(replacement, text)
        return _headless_pem(text) if "-----END " in text else text


def _headless_pem(text: str) -> str:
    """A log tail that starts inside a PEM block: the base64 lines before its END line are masked."""
    kept: list[str] = []
    for line in text.split("\n"):
        if _PEM_END.search(line):
            while kept and _PEM_BODY.fullmatch(kept[-1].strip()):
                kept.pop()
            line = MASK
        kept.append(line)
    return "\n".join(kept)


def secret_values(data: Mapping[str, str]) -> list[str]:
    """What to mask of one Secret's data: each value, and inside a dockerconfigjson the `auth`,
    `password` and token fields and the `user:password` that `auth` encodes."""
    found = [v for v in data.values() if v]
    for value in data.values():
        try:
            config = json.loads(value)
        except ValueError:
            continue
        auths = config.get("auths") if isinstance(config, dict) else None
        for entry in (auths or {}).values() if isinstance(auths, dict) else ():
            if not isinstance(entry, dict):
                continue
            found += [str(entry[k]) for k in ("auth", "password", "identitytoken", "registrytoken") if entry.get(k)]
            try:
                pair = base64.b64decode(str(entry.get("auth") or ""), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                continue
            found += [pair, pair.partition(":")[2]]
    return found


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
