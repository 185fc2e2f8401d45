"""Scalar validators: each turns one YAML value into what the config holds, or raises ValueError
with a message that says what to write instead. `parse_duration` and `parse_tolerance` are public."""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from bot.core import yq
from bot.core.config.model import Tolerance
from bot.core.config.paths import MAX_PATTERN_LENGTH, GlobError, compile_glob
from bot.core.text import shown

MAX_DURATION = 30 * 24 * 3600


_QUEUE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(text: str | int) -> int:
    """Seconds of `90s`, `30m`, `2h`, `1h30m` or a bare number of seconds; > 0."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError(f"must be a duration like `30m`, `2h`, `1h30m` or seconds, got {_kind(text)}")
    if isinstance(text, int):
        seconds = text
    elif text.strip().isdigit():
        seconds = int(text.strip())
    else:
        match = _DURATION.fullmatch(text.strip())
        if not text.strip() or match is None:
            raise ValueError(f"`{shown(text)}` is not a duration; use `90s`, `30m`, `2h` or `1h30m`")
        hours, minutes, secs = (int(group or 0) for group in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds <= 0:
        raise ValueError("must be longer than 0 seconds")
    if seconds > MAX_DURATION:
        raise ValueError(f"must be at most {MAX_DURATION // 3600}h")
    return seconds


def parse_tolerance(value: str | float) -> Tolerance:
    """`5%` (relative to the baseline), an absolute number like `0.01` (never negative), or `auto`
    (k standard deviations of the recent baselines)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"must be a number like `0.01`, a percentage like `5%` or `auto`, got {_kind(value)}")
    if isinstance(value, str) and value.strip() == "auto":
        return Tolerance(0.0, auto=True)
    relative = isinstance(value, str) and value.strip().endswith("%")
    number_text = value.strip().removesuffix("%").strip() if isinstance(value, str) else value
    try:
        number = float(number_text)
    except ValueError:
        raise ValueError(f"`{shown(str(value))}` is not a tolerance; use a number like `0.01`, "
                         f"a percentage like `5%` or `auto`") from None
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    if number < 0:
        raise ValueError("must not be negative (the direction says which way is worse)")
    return Tolerance(number, relative)


def yq_path(text: str) -> yq.Path:
    """The segments of a deploy target's `field` (the yq grammar of `bot.core.yq`); the document
    root (`.`) is refused: it is no image field."""
    segments = yq.parse(text)
    if not segments:
        raise ValueError("`.` is the whole document, not an image field; point `field` at the image itself, "
                         "like `.spec.template.spec.containers[0].image`")
    return segments


def _kind(value: Any) -> str:
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (int, float)):
        return f"the number {shown(str(value))}"
    if isinstance(value, str):
        return f"the string `{shown(value)}`"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a YAML {type(value).__name__}"


_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_METRIC = re.compile(r"[A-Za-z0-9_.-]+")
_OWNER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})")
_REPO = re.compile(r"[A-Za-z0-9._-]{1,100}")
_DOMAIN = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])(?:\.(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]))*(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REGISTRY = re.compile(rf"{_DOMAIN}(?:/{_PATH_COMPONENT})*")
_IMAGE_REF = re.compile(rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
                        rf"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{{32,}})?")
_CPU = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)m?")
_MEMORY = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE]\d+|Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?")
_RESERVED_ENV = ("FLOPS_", "AWS_")
_RESERVED_ENV_NAMES = ("MLFLOW_S3_ENDPOINT_URL",)


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {_kind(value)}")
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


def _non_empty(value: Any) -> str:
    if not _string(value).strip():
        raise ValueError("must not be empty")
    return str(value)


def _scalar_text(value: Any) -> str:
    """A YAML scalar as the string a process sees (`true` stays lowercase)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return _string(value)
    raise ValueError(f"must be a string or number, got {_kind(value)}")


def _name(value: Any) -> str:
    text = _non_empty(value)
    if len(text) > 40 or not _NAME.fullmatch(text):
        raise ValueError(f"`{shown(text)}` is not a valid name: use at most 40 lowercase letters, digits and `-`, "
                         f"starting and ending with a letter or digit (like `server`)")
    return text


def _relative_path(value: Any) -> str:
    text = _non_empty(value)
    if text.startswith(("/", "~")) or re.match(r"[A-Za-z]:[\\/]", text):
        raise ValueError(f"`{shown(text)}` is absolute; give a path relative to the repository root")
    if ".." in re.split(r"[\\/]", text):
        raise ValueError(f"`{shown(text)}` leaves the repository (`..`); give a path inside it")
    if "\\" in text:
        raise ValueError(f"`{shown(text)}` uses `\\`; separate directories with `/`")
    return text


def _file_path(value: Any) -> str:
    text = _relative_path(value)
    if text.endswith("/") or text in (".", "./"):
        raise ValueError(f"`{shown(text)}` is a directory; name a file")
    return text


def _registry(value: Any) -> str:
    text = _non_empty(value)
    if "://" in text:
        raise ValueError(f"no scheme: write `{shown(text.split('://', 1)[1].rstrip('/'))}`")
    if text.endswith("/"):
        raise ValueError(f"no trailing slash: write `{shown(text.rstrip('/'))}`")
    if "@" in text or ("/" in text and ":" in text.split("/", 1)[1]):
        raise ValueError("no tag or digest: the bot appends `/<image name>:<tag>` itself")
    if len(text) > 200 or not _REGISTRY.fullmatch(text):
        raise ValueError(f"`{shown(text)}` is not a registry path like `harbor.example.com/flops` "
                         f"(lowercase path, no spaces)")
    return text


def _image_reference(value: Any) -> str:
    text = _non_empty(value)
    if "://" in text:
        raise ValueError("an image reference has no scheme: write `registry.example.com/team/image:tag`")
    if len(text) > 255 or not _IMAGE_REF.fullmatch(text):
        raise ValueError(f"`{shown(text)}` is not an image reference like `registry.example.com/team/image:tag`")
    return text


def _github_repo(value: Any) -> str:
    text = _non_empty(value)
    owner, _, name = text.partition("/")
    if not _OWNER.fullmatch(owner) or not _REPO.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"`{shown(text)}` is not a repository; write `owner/name`")
    return text


def _branch(value: Any) -> str:
    text = _non_empty(value)
    bad = (text.startswith(("/", "-", "refs/")) or text.endswith(("/", ".", ".lock")) or ".." in text
           or "//" in text or "@{" in text or re.search(r"[\x00-\x20\x7f~^:?*\[\\]", text))
    if bad:
        raise ValueError(f"`{shown(text)}` is not a branch name (write it as on GitHub, like `main`, "
                         f"without `refs/heads/`)")
    return text


def _glob_length(text: str) -> str:
    if len(text) > MAX_PATTERN_LENGTH:
        raise ValueError(f"`{shown(text, 40)}` is {len(text)} characters long; a pattern has at most "
                         f"{MAX_PATTERN_LENGTH}")
    return text


def _tag_pattern(value: Any) -> str:
    text = _glob_length(_non_empty(value))
    if text.startswith("refs/"):
        raise ValueError(f"write the tag pattern without `refs/tags/`, like `{shown(text.split('/')[-1])}`")
    if re.search(r"[\x00-\x20\x7f]", text):
        raise ValueError("a tag pattern has no spaces or control characters")
    return text


def _path_pattern(value: Any) -> str:
    text = _glob_length(_non_empty(value))
    if text.startswith("!"):
        raise ValueError("negated patterns are not supported; list the paths that should trigger a build")
    if ".." in text.split("/"):
        raise ValueError(f"`{shown(text)}` leaves the repository (`..`)")
    try:
        compile_glob(text)
    except GlobError as exc:
        raise ValueError(f"`{shown(text)}` is not a valid glob ({exc})") from None
    return text


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be `true` or `false`, got {_kind(value)}")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a whole number, got {_kind(value)}")
    return value


def _between(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        number = _integer(value)
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}, got {number}")
        return number
    return check


def _version(value: Any) -> int:
    if _integer(value) != 1:
        raise ValueError(f"unsupported schema version {value}; this flops-bot reads `version: 1`")
    return 1


def _cpu(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        text = f"{value:g}" if math.isfinite(value) else "x"
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise ValueError(f"must be a CPU quantity like `500m`, `1` or `2.5`, got {_kind(value)}")
    if not _CPU.fullmatch(text):
        raise ValueError(f"`{shown(text)}` is not a CPU quantity; use cores (`2`, `0.5`) or millicores (`500m`)")
    if float(text.removesuffix("m")) <= 0:
        raise ValueError("must be more than 0")
    return text


def _memory(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise ValueError(f"must be a memory quantity like `512Mi` or `16Gi`, got {_kind(value)}")
    if not _MEMORY.fullmatch(text):
        hint = f" (write `{text[:-1]}`)" if re.fullmatch(r"[\d.]+[KMGTPE]i?B", text) else ""
        raise ValueError(f"`{shown(text)}` is not a memory quantity; use `512Mi`, `16Gi`, `1G` or bytes{hint}")
    if float(re.match(r"[\d.]*", text).group() or 0) <= 0:  # type: ignore[union-attr]
        raise ValueError("must be more than 0")
    return text


def _gpu(value: Any) -> int:
    number = _integer(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def _direction(value: Any) -> str:
    if value not in ("higher", "lower"):
        raise ValueError(f"must be `higher` or `lower` (which way is better), got {_kind(value)}")
    return str(value)


def _mode(value: Any) -> str:
    if value not in ("commit", "pull_request"):
        raise ValueError(f"must be `commit` or `pull_request`, got {_kind(value)}")
    return str(value)


def _yq_field(value: Any) -> str:
    text = _non_empty(value)
    yq_path(text)
    return text


def _mount_path(value: Any) -> str:
    text = _non_empty(value)
    if not text.startswith("/"):
        raise ValueError(f"`{shown(text)}` must be absolute, like `/data`")
    if ".." in text.split("/") or ":" in text:
        raise ValueError(f"`{shown(text)}` must not contain `..` or `:`")
    if text.rstrip("/") in ("", "/workspace") or text.startswith("/workspace/"):
        raise ValueError(f"`{shown(text)}` is taken (the checkout is mounted at /workspace); pick another, "
                         f"like `/data`")
    return text


def _claim(value: Any) -> str:
    text = _non_empty(value)
    if len(text) > 253 or not _SUBDOMAIN.fullmatch(text):
        raise ValueError(f"`{shown(text)}` is not a PersistentVolumeClaim name (lowercase letters, digits, `-`, `.`)")
    return text


def _command_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ValueError(f"use a list, no shell: `{shown(str(value.split()), 50)}`"
                         .replace("'", '"'))
    if not isinstance(value, list) or not value:
        raise ValueError(f"must be a non-empty list of strings like `[\"python\", \"-m\", \"regression\"]`, "
                         f"got {_kind(value) if value != [] else 'an empty list'}")
    return tuple(value)


def _build_arg_name(key: str) -> str:
    if not _IDENTIFIER.fullmatch(key):
        raise ValueError("a build argument name is letters, digits and `_`, not starting with a digit")
    return key


def _env_name(key: str) -> str:
    if not _IDENTIFIER.fullmatch(key):
        raise ValueError("an environment variable name is letters, digits and `_`, not starting with a digit")
    if key.upper().startswith(_RESERVED_ENV) or key.upper() in _RESERVED_ENV_NAMES:
        raise ValueError("reserved: flops-bot sets `FLOPS_*` and `AWS_*` itself; pick another name")
    return key


def _label_key(key: str) -> str:
    prefix, _, name = key.rpartition("/")
    if (prefix and (len(prefix) > 253 or not _SUBDOMAIN.fullmatch(prefix))) or not _LABEL_NAME.fullmatch(name):
        raise ValueError("not a Kubernetes label key (like `pool` or `example.com/pool`)")
    return key


def _label_value(value: Any) -> str:
    text = _scalar_text(value)
    if not _LABEL_VALUE.fullmatch(text):
        raise ValueError(f"`{shown(text)}` is not a Kubernetes label value (at most 63 letters, digits, `-_.`)")
    return text


def _queue_name(value: Any) -> str:
    """A Kueue LocalQueue's name: it goes on the label `kueue.x-k8s.io/queue-name`."""
    if not isinstance(value, str):
        raise ValueError(f"must be the name of a Kueue LocalQueue, like `gpu`, got {_kind(value)}")
    if not _QUEUE.fullmatch(value):
        raise ValueError(f"`{shown(value)}` is not a LocalQueue name: at most 63 lowercase letters, digits and `-`, "
                         "starting and ending with a letter or digit (`kubectl get localqueues` lists them)")
    return value


def _toleration_key(value: Any) -> str:
    return _label_key(_non_empty(value))


def _one_of(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(f'`{c}`' for c in choices)}, got {_kind(value)}")
        return str(value)
    return check


def _within_max(high: int, name: str) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        number = _integer(value)
        if not 1 <= number <= high:
            raise ValueError(f"must be between 1 and {name} ({high}), got {number}; raise `{name}` if you need more")
        return number
    return check
