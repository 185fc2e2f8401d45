"""`.github/flops.yml` (schema version 1): parse and fully validate into frozen dataclasses.

Sans-I/O apart from `load`. `parse` collects every problem, each with the key path it concerns
(`images[1].dockerfile`, `regression.metrics.loss.tolerance`), and raises one `ConfigError`.
Unknown keys are errors: a typo must never silently loosen a gate.
"""
from __future__ import annotations

import base64
import binascii
import difflib
import functools
import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml

CONFIG_PATH = ".github/flops.yml"
MAX_BYTES = 256 * 1024
MAX_DURATION = 30 * 24 * 3600
MAX_CLIENTS_LIMIT = 1000
MAX_ROUNDS_LIMIT = 100_000

T = TypeVar("T")

# --------------------------------------------------------------------------- the public types


@dataclass(frozen=True, slots=True)
class Problem:
    path: str  # `images[1].dockerfile`; "" for the file as a whole
    message: str

    def __str__(self) -> str:
        return f"`{self.path}`: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """Every problem of a flops.yml; `str()` is one line per problem."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)


@dataclass(frozen=True, slots=True)
class Tolerance:
    value: float
    relative: bool = False  # True: `value` is a percentage of the baseline


@dataclass(frozen=True, slots=True)
class Resources:
    cpu: str | None = None
    memory: str | None = None
    gpu: int = 0


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    direction: str  # "higher" | "lower": which way is better
    tolerance: Tolerance = Tolerance(0.0)


@dataclass(frozen=True, slots=True)
class Volume:
    claim: str
    mount_path: str
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class ImageConfig:
    name: str
    dockerfile: str
    context: str = "."
    paths: tuple[str, ...] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    resources: Resources = Resources("1", "2Gi", 0)
    timeout: int = 30 * 60

    def matches(self, changed_paths: Iterable[str] | None) -> bool:
        """Whether a change to `changed_paths` needs this image rebuilt (always, without `paths`)."""
        if not self.paths or changed_paths is None:
            return True
        return any(path_matches(pattern, path) for path in changed_paths for pattern in self.paths)

    def reference(self, registry: str, tag: str) -> str:
        return f"{registry}/{self.name}:{tag}"


@dataclass(frozen=True, slots=True)
class DeployTarget:
    name: str
    repo: str
    branch: str
    file: str
    images: tuple[str, ...]
    field: str | None = None
    mode: str = "commit"  # "commit" | "pull_request"


@dataclass(frozen=True, slots=True)
class RegressionConfig:
    image: str
    command: tuple[str, ...]
    resources: Resources = Resources()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    volumes: tuple[Volume, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: int = 3600
    metrics: tuple[Metric, ...] = ()


@dataclass(frozen=True, slots=True)
class FederatedConfig:
    server_image: str
    server_port: int = 8080
    client_image: str = ""
    clients: int = 2
    rounds: int = 3
    timeout: int = 3600
    max_clients: int = 16
    max_rounds: int = 100
    on_push: bool = False
    resources: Resources = Resources()


@dataclass(frozen=True, slots=True)
class RepoConfig:
    version: int
    registry: str
    branches: tuple[str, ...] | None = None  # None: the repository's default branch
    tags: tuple[str, ...] = ()
    images: tuple[ImageConfig, ...] = ()
    deploy: tuple[DeployTarget, ...] = ()
    regression: RegressionConfig | None = None
    federated: FederatedConfig | None = None

    def image(self, name: str) -> ImageConfig | None:
        return next((image for image in self.images if image.name == name), None)


# --------------------------------------------------------------------------- entry points


def decode_content(data: Any) -> str:
    """The text of a Contents API answer."""
    if not isinstance(data, dict) or data.get("type", "file") != "file" or not isinstance(data.get("content"), str):
        raise ConfigError([Problem("", f"{CONFIG_PATH} is not a file; make it a regular YAML file.")])
    try:
        return base64.b64decode(data["content"]).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ConfigError([Problem("", f"{CONFIG_PATH} is not UTF-8 text; save it as UTF-8.")]) from None


def parse(text: str) -> RepoConfig:
    """Validate a whole flops.yml; raises `ConfigError` naming every problem."""
    data = load_yaml(text)
    problems: list[Problem] = []
    cfg = _repo_config(_Node(data, "", problems))
    if problems:
        raise ConfigError(problems)
    return cfg


def load_yaml(text: str) -> dict[str, Any]:
    """The top-level mapping, or `ConfigError` for a file that is not one."""
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise ConfigError([Problem("", f"the file is larger than {MAX_BYTES // 1024} KiB; flops.yml is a "
                                       f"small config file, keep it under that.")])
    try:
        data, duplicates = _read_yaml(text)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([Problem("", _yaml_message(exc))]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem("", f"YAML syntax error: {exc}")]) from None
    except RecursionError:
        raise ConfigError([Problem("", "YAML nests too deeply; flatten the file.")]) from None
    except (ValueError, TypeError, OverflowError) as exc:  # PyYAML constructors: `2024-13-45`, huge ints
        raise ConfigError([Problem("", f"YAML value cannot be read ({_short(str(exc), 100)}); quote it "
                                       f"if it is meant as text.")]) from None
    if duplicates:
        raise ConfigError(duplicates)
    if data is None:
        raise ConfigError([Problem("", "the file is empty; start with `version: 1` and `registry:` "
                                       "(see examples/flops.yml).")])
    if not isinstance(data, dict):
        raise ConfigError([Problem("", f"the top level must be a mapping of keys (`registry: ...`), "
                                       f"got {_kind(data)}.")])
    return data


def _read_yaml(text: str) -> tuple[Any, list[Problem]]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        duplicates = _duplicate_keys(node)  # before constructing: merge keys (`<<`) rewrite the nodes
        return (None if node is None else loader.construct_document(node)), duplicates
    finally:
        loader.dispose()


def _duplicate_keys(root: Any) -> list[Problem]:
    """Keys given twice in one mapping (PyYAML would silently keep the last)."""
    problems: list[Problem] = []
    stack, seen_nodes = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes or not isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
            continue
        keys: set[tuple[str, str]] = set()
        for key_node, value_node in node.value:
            stack.append(value_node)
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if (key_node.tag, key_node.value) in keys:
                mark = key_node.start_mark
                problems.append(Problem("", f"line {mark.line + 1}, column {mark.column + 1}: duplicate key "
                                            f"`{_short(key_node.value)}`; keep only one."))
            keys.add((key_node.tag, key_node.value))
    return problems


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = "; ".join(part for part in (exc.context, exc.problem) if part)
    return f"YAML syntax error{where}: {what or 'invalid YAML'}"


# --------------------------------------------------------------------------- scalars (public)

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
            raise ValueError(f"`{_short(text)}` is not a duration; use `90s`, `30m`, `2h` or `1h30m`")
        hours, minutes, secs = (int(group or 0) for group in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds <= 0:
        raise ValueError("must be longer than 0 seconds")
    if seconds > MAX_DURATION:
        raise ValueError(f"must be at most {MAX_DURATION // 3600}h")
    return seconds


def parse_tolerance(value: str | float) -> Tolerance:
    """`5%` (relative to the baseline) or an absolute number like `0.01`; never negative."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"must be a number like `0.01` or a percentage like `5%`, got {_kind(value)}")
    relative = isinstance(value, str) and value.strip().endswith("%")
    number_text = value.strip().removesuffix("%").strip() if isinstance(value, str) else value
    try:
        number = float(number_text)
    except ValueError:
        raise ValueError(f"`{_short(str(value))}` is not a tolerance; use a number like `0.01` "
                         f"or a percentage like `5%`") from None
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    if number < 0:
        raise ValueError("must not be negative (the direction says which way is worse)")
    return Tolerance(number, relative)


_YQ_TOKEN = re.compile(r'\.(?:([A-Za-z0-9_-]+)|"((?:[^"\\]|\\.)*)")?|\[(\d+)\]')


def yq_path(text: str) -> tuple[str | int, ...]:
    """Segments of a yq path: `.spec.containers[0].image` -> ("spec", "containers", 0, "image").

    Keys are plain (`.a-b_c`) or double-quoted (`."app.kubernetes.io/name"`); indexes are `[N]`
    (also `.[N]`)."""
    if not isinstance(text, str) or not text.startswith("."):
        raise ValueError("a yq path starts with `.`, like `.spec.template.spec.containers[0].image`")
    segments: list[str | int] = []
    pos = 0
    while pos < len(text):
        match = _YQ_TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"unexpected `{_short(text[pos:], 20)}` at character {pos + 1} of the yq path; "
                             f"write keys as `.key` or `.\"odd.key\"` and indexes as `[0]`")
        plain, quoted, index = match.groups()
        if plain is not None:
            segments.append(plain)
        elif quoted is not None:
            segments.append(re.sub(r"\\(.)", r"\1", quoted))
        elif index is not None:
            segments.append(int(index))
        elif not text.startswith("[", match.end()):
            raise ValueError(f"empty key at character {pos + 1} of the yq path")
        pos = match.end()
    if not segments:
        raise ValueError("the yq path names nothing; point it at the image field, like `.spec.containers[0].image`")
    return tuple(segments)


# --------------------------------------------------------------------------- path matching


def path_matches(pattern: str, path: str) -> bool:
    """gitignore-lite: a pattern without `/` matches a file or directory name anywhere; with
    `/` it is anchored at the repository root; `**` spans any number of directories; a
    pattern matching a directory matches everything below it."""
    regex = _pattern_regex(pattern)
    parts = path.strip("/").split("/")
    return any(regex.fullmatch("/".join(parts[:n])) for n in range(len(parts), 0, -1))


@functools.lru_cache(maxsize=1024)
def _pattern_regex(pattern: str) -> re.Pattern[str]:
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


# --------------------------------------------------------------------------- validation machinery

_MISSING: Any = object()


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


@dataclass(slots=True)
class _Node:
    """A YAML value at a key path, with the list problems are collected into."""

    value: Any
    path: str
    problems: list[Problem]

    def add(self, message: str, key: object = None) -> None:
        self.problems.append(Problem(self.path if key is None else _join(self.path, key), message))

    def child(self, key: str | int) -> _Node:
        path = f"{self.path}[{key}]" if isinstance(key, int) else _join(self.path, key)
        value = (self.value[key] if isinstance(self.value, dict) else
                 self.value[key] if isinstance(self.value, list) and isinstance(key, int) else _MISSING)
        return _Node(value, path, self.problems)

    def mapping(self, keys: Collection[str], required: Collection[str] = (), hint: str = "") -> bool:
        """Check this is a mapping of known keys with the required ones; False when not a mapping."""
        if not isinstance(self.value, dict):
            self.add(f"must be a mapping{hint}, got {_kind(self.value)}")
            return False
        for key in self.value:
            if not isinstance(key, str):
                self.add(f"keys must be strings, got {_kind(key)}", _short(str(key)))
            elif key not in keys:
                self.add(_unknown_key(key, keys), key)
        for key in required:
            if key not in self.value:
                self.add("required", key)
        return True

    def get(self, key: str, convert: Callable[[Any], T], default: T) -> T:
        """`convert(value)` of `key`, or `default` when absent or invalid (the problem recorded)."""
        if not isinstance(self.value, dict) or key not in self.value:
            return default
        return self.child(key).convert(convert, default)

    def convert(self, convert: Callable[[Any], T], default: T) -> T:
        if self.value is None:
            self.add("empty value; give a value or remove the key to get the default")
            return default
        try:
            return convert(self.value)
        except ValueError as exc:
            self.add(str(exc))
            return default

    def items(self) -> list[_Node]:
        """The entries of a list; a problem when it is not one."""
        if not isinstance(self.value, list):
            self.add(f"must be a list, got {_kind(self.value)}")
            return []
        return [self.child(i) for i in range(len(self.value))]

    def strings(self, convert: Callable[[Any], T]) -> tuple[T, ...]:
        """The valid entries of a list of scalars; a problem for each invalid one."""
        values = (item.convert(convert, _MISSING) for item in self.items())
        return tuple(value for value in values if value is not _MISSING)


def _unknown_key(key: str, keys: Collection[str]) -> str:
    lower = {k.lower(): k for k in keys}
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6) or (
        [lower[key.lower()]] if key.lower() in lower else [])
    if close:
        return f"unknown key; did you mean `{close[0]}`?"
    return "unknown key; expected one of " + ", ".join(f"`{k}`" for k in sorted(keys))


def _kind(value: Any) -> str:
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (int, float)):
        return f"the number {_short(str(value))}"
    if isinstance(value, str):
        return f"the string `{_short(value)}`"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a YAML {type(value).__name__}"


def _short(text: str, limit: int = 60) -> str:
    text = text.replace("\n", "\\n").replace("`", "'")
    return text if len(text) <= limit else text[:limit - 1] + "…"


# --------------------------------------------------------------------------- scalar validators

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
        raise ValueError(f"`{_short(text)}` is not a valid name: use at most 40 lowercase letters, digits and `-`, "
                         f"starting and ending with a letter or digit (like `server`)")
    return text


def _relative_path(value: Any) -> str:
    text = _non_empty(value)
    if text.startswith(("/", "~")) or re.match(r"[A-Za-z]:[\\/]", text):
        raise ValueError(f"`{_short(text)}` is absolute; give a path relative to the repository root")
    if ".." in re.split(r"[\\/]", text):
        raise ValueError(f"`{_short(text)}` leaves the repository (`..`); give a path inside it")
    if "\\" in text:
        raise ValueError(f"`{_short(text)}` uses `\\`; separate directories with `/`")
    return text


def _file_path(value: Any) -> str:
    text = _relative_path(value)
    if text.endswith("/") or text in (".", "./"):
        raise ValueError(f"`{_short(text)}` is a directory; name a file")
    return text


def _registry(value: Any) -> str:
    text = _non_empty(value)
    if "://" in text:
        raise ValueError(f"no scheme: write `{_short(text.split('://', 1)[1].rstrip('/'))}`")
    if text.endswith("/"):
        raise ValueError(f"no trailing slash: write `{_short(text.rstrip('/'))}`")
    if "@" in text or ("/" in text and ":" in text.split("/", 1)[1]):
        raise ValueError("no tag or digest: the bot appends `/<image name>:<tag>` itself")
    if len(text) > 200 or not _REGISTRY.fullmatch(text):
        raise ValueError(f"`{_short(text)}` is not a registry path like `harbor.example.com/flops` "
                         f"(lowercase path, no spaces)")
    return text


def _image_reference(value: Any) -> str:
    text = _non_empty(value)
    if "://" in text:
        raise ValueError("an image reference has no scheme: write `registry.example.com/team/image:tag`")
    if len(text) > 255 or not _IMAGE_REF.fullmatch(text):
        raise ValueError(f"`{_short(text)}` is not an image reference like `registry.example.com/team/image:tag`")
    return text


def _github_repo(value: Any) -> str:
    text = _non_empty(value)
    owner, _, name = text.partition("/")
    if not _OWNER.fullmatch(owner) or not _REPO.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"`{_short(text)}` is not a repository; write `owner/name`")
    return text


def _branch(value: Any) -> str:
    text = _non_empty(value)
    bad = (text.startswith(("/", "-", "refs/")) or text.endswith(("/", ".", ".lock")) or ".." in text
           or "//" in text or "@{" in text or re.search(r"[\x00-\x20\x7f~^:?*\[\\]", text))
    if bad:
        raise ValueError(f"`{_short(text)}` is not a branch name (write it as on GitHub, like `main`, "
                         f"without `refs/heads/`)")
    return text


def _tag_pattern(value: Any) -> str:
    text = _non_empty(value)
    if text.startswith("refs/"):
        raise ValueError(f"write the tag pattern without `refs/tags/`, like `{_short(text.split('/')[-1])}`")
    if re.search(r"[\x00-\x20\x7f]", text):
        raise ValueError("a tag pattern has no spaces or control characters")
    return text


def _path_pattern(value: Any) -> str:
    text = _non_empty(value)
    if text.startswith("!"):
        raise ValueError("negated patterns are not supported; list the paths that should trigger a build")
    if ".." in text.split("/"):
        raise ValueError(f"`{_short(text)}` leaves the repository (`..`)")
    try:
        _pattern_regex(text)
    except re.error as exc:
        raise ValueError(f"`{_short(text)}` is not a valid glob ({exc})") from None
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
        raise ValueError(f"`{_short(text)}` is not a CPU quantity; use cores (`2`, `0.5`) or millicores (`500m`)")
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
        raise ValueError(f"`{_short(text)}` is not a memory quantity; use `512Mi`, `16Gi`, `1G` or bytes{hint}")
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
        raise ValueError(f"`{_short(text)}` must be absolute, like `/data`")
    if ".." in text.split("/") or ":" in text:
        raise ValueError(f"`{_short(text)}` must not contain `..` or `:`")
    if text.rstrip("/") in ("", "/workspace") or text.startswith("/workspace/"):
        raise ValueError(f"`{_short(text)}` is taken (the checkout is mounted at /workspace); pick another, "
                         f"like `/data`")
    return text


def _claim(value: Any) -> str:
    text = _non_empty(value)
    if len(text) > 253 or not _SUBDOMAIN.fullmatch(text):
        raise ValueError(f"`{_short(text)}` is not a PersistentVolumeClaim name (lowercase letters, digits, `-`, `.`)")
    return text


def _command_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ValueError(f"use a list, no shell: `{_short(str(value.split()), 50)}`"
                         .replace("'", '"'))
    if not isinstance(value, list) or not value:
        raise ValueError(f"must be a non-empty list of strings like `[\"python\", \"-m\", \"regression\"]`, "
                         f"got {_kind(value) if value != [] else 'an empty list'}")
    return tuple(value)


# --------------------------------------------------------------------------- sections

_TOP = ("version", "registry", "branches", "tags", "images", "deploy", "regression", "federated")
_IMAGE = ("name", "dockerfile", "context", "paths", "build_args", "target", "resources", "timeout")
_DEPLOY = ("name", "repo", "branch", "file", "image", "images", "field", "mode")
_REGRESSION = ("image", "command", "resources", "node_selector", "tolerations", "volumes", "env", "timeout",
               "metrics")
_FEDERATED = ("server", "client", "clients", "rounds", "timeout", "max_clients", "max_rounds", "on_push",
              "resources")


def _repo_config(top: _Node) -> RepoConfig:
    top.mapping(_TOP, required=("registry",))
    version = top.get("version", _version, 1)
    registry = top.get("registry", _registry, "")
    branches = _string_list(top, "branches", _branch, non_empty=True) if "branches" in top.value else None
    tags = _string_list(top, "tags", _tag_pattern)
    before = len(top.problems)
    images = _images(top.child("images")) if "images" in top.value else ()
    # With a broken `images`, references to it cannot be judged: report the cause only.
    names = {image.name for image in images} if len(top.problems) == before else None
    deploy = _deploy_targets(top.child("deploy"), names) if "deploy" in top.value else ()
    regression = _regression(top.child("regression"), names) if "regression" in top.value else None
    federated = _federated(top.child("federated"), names) if "federated" in top.value else None
    return RepoConfig(version, registry, branches, tags, images, deploy, regression, federated)


def _string_list(node: _Node, key: str, convert: Callable[[Any], str], *, non_empty: bool = False) -> tuple[str, ...]:
    if not isinstance(node.value, dict) or key not in node.value:
        return ()
    child = node.child(key)
    if child.value is None or isinstance(child.value, str):
        example = f"[{child.value}]" if isinstance(child.value, str) else "[main]"
        child.add(f"must be a list, like `{_short(example)}`")
        return ()
    values = child.strings(convert)
    if non_empty and child.value == []:
        child.add("must not be empty; remove the key to use the default")
    for i, value in enumerate(values):
        if value in values[:i]:
            child.add(f"`{_short(value)}` is listed twice")
    return values


def _unique_names(nodes: list[_Node], names: list[str | None], what: str) -> None:
    seen: dict[str, int] = {}
    for i, (node, name) in enumerate(zip(nodes, names)):
        if not name:
            continue
        if name in seen:
            node.add(f"duplicate {what} `{name}`: already {node.path.rsplit('[', 1)[0]}[{seen[name]}]", "name")
        seen.setdefault(name, i)


def _images(node: _Node) -> tuple[ImageConfig, ...]:
    entries = node.items()
    images = [_image(entry) for entry in entries]
    _unique_names(entries, [image.name if image else None for image in images], "image name")
    return tuple(image for image in images if image is not None)


def _image(node: _Node) -> ImageConfig | None:
    if not node.mapping(_IMAGE, required=("name", "dockerfile"), hint=" like `{name: server, dockerfile: Dockerfile}`"):
        return None
    raw_name = node.value.get("name")
    return ImageConfig(
        name=node.get("name", _name, raw_name if isinstance(raw_name, str) else ""),
        dockerfile=node.get("dockerfile", _file_path, ""),
        context=node.get("context", _relative_path, "."),
        paths=_string_list(node, "paths", _path_pattern),
        build_args=_scalar_map(node, "build_args", _build_arg_name),
        target=node.get("target", _string, "") or None,
        resources=_resources(node, Resources("1", "2Gi", 0)),
        timeout=node.get("timeout", parse_duration, 30 * 60),
    )


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
        raise ValueError(f"`{_short(text)}` is not a Kubernetes label value (at most 63 letters, digits, `-_.`)")
    return text


def _scalar_map(node: _Node, key: str, check_key: Callable[[str], str],
                convert: Callable[[Any], str] = _scalar_text) -> dict[str, str]:
    if not isinstance(node.value, dict) or key not in node.value:
        return {}
    child = node.child(key)
    if not isinstance(child.value, dict):
        child.add(f"must be a mapping like `{{NAME: value}}`, got {_kind(child.value)}")
        return {}
    out: dict[str, str] = {}
    for name in child.value:
        if not isinstance(name, str):
            child.add(f"keys must be strings, got {_kind(name)}", _short(str(name)))
            continue
        try:
            check_key(name)
        except ValueError as exc:
            child.add(str(exc), name)
            continue
        value = child.child(name).convert(convert, _MISSING)
        if value is not _MISSING:
            out[name] = value
    return out


def _resources(node: _Node, default: Resources) -> Resources:
    if not isinstance(node.value, dict) or "resources" not in node.value:
        return default
    child = node.child("resources")
    if not child.mapping(("cpu", "memory", "gpu"), hint=" like `{cpu: \"1\", memory: 2Gi}`"):
        return default
    return Resources(cpu=child.get("cpu", _cpu, default.cpu), memory=child.get("memory", _memory, default.memory),
                     gpu=child.get("gpu", _gpu, default.gpu))


def _deploy_targets(node: _Node, images: Collection[str] | None) -> tuple[DeployTarget, ...]:
    entries = node.items()
    targets = [_deploy_target(entry, images) for entry in entries]
    _unique_names(entries, [t.name if t else None for t in targets], "deploy target")
    return tuple(target for target in targets if target is not None)


def _deploy_target(node: _Node, images: Collection[str] | None) -> DeployTarget | None:
    if not node.mapping(_DEPLOY, required=("name", "repo", "branch", "file"), hint=" like `{name: dev, repo: ...}`"):
        return None
    raw_name = node.value.get("name")
    target = DeployTarget(
        name=node.get("name", _name, raw_name if isinstance(raw_name, str) else ""),
        repo=node.get("repo", _github_repo, ""),
        branch=node.get("branch", _branch, ""),
        file=node.get("file", _file_path, ""),
        images=_deploy_images(node, images),
        field=node.get("field", _yq_field, None),
        mode=node.get("mode", _mode, "commit"),
    )
    if target.field is not None and len(target.images) > 1:
        node.add("one `field` holds one image: drop `field` (each container of each image is found by its "
                 "repository) or make one target per image", "field")
    return target


def _deploy_images(node: _Node, images: Collection[str] | None) -> tuple[str, ...]:
    has_one, has_many = "image" in node.value, "images" in node.value
    if has_one == has_many:
        node.add("give exactly one of `image: <name>` and `images: [<name>, ...]`" if has_one else
                 "required: the image this target deploys (or `images: [...]` for several)", "image")
        return ()
    if has_one:
        child = node.child("image")
        name = child.convert(_image_ref_of(images), "")
        return (name,) if name else ()
    names = _string_list(node, "images", _image_ref_of(images), non_empty=True)
    return names


def _image_ref_of(images: Collection[str] | None) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        name = _non_empty(value)
        if images is not None and name not in images:
            known = ", ".join(f"`{n}`" for n in sorted(images)) or "none are defined"
            raise ValueError(f"`{_short(name)}` is not an entry of `images` (known: {known})")
        return name
    return check


def _regression(node: _Node, images: Collection[str] | None) -> RegressionConfig:
    node.mapping(_REGRESSION, required=("image", "command"))
    image = node.get("image", _image_reference, "")
    if image in (images or ()):
        node.add(f"a full image reference (like `registry.example.com/team/runtime:tag`), not the name of "
                 f"`images` entry `{image}`", "image")
    return RegressionConfig(
        image=image,
        command=_command(node),
        resources=_resources(node, Resources()),
        node_selector=_scalar_map(node, "node_selector", _label_key, _label_value),
        tolerations=_tolerations(node),
        volumes=_volumes(node),
        env=_scalar_map(node, "env", _env_name),
        timeout=node.get("timeout", parse_duration, 3600),
        metrics=_metrics(node),
    )


def _command(node: _Node) -> tuple[str, ...]:
    if not isinstance(node.value, dict) or "command" not in node.value:
        return ()
    child = node.child("command")
    if child.convert(_command_list, None) is None:
        return ()
    command = child.strings(_string)
    if command and not command[0].strip():
        child.child(0).add("the program must not be empty")
    return command


def _tolerations(node: _Node) -> tuple[dict[str, Any], ...]:
    if not isinstance(node.value, dict) or "tolerations" not in node.value:
        return ()
    return tuple(t for t in (_toleration(entry) for entry in node.child("tolerations").items()) if t is not None)


def _toleration(node: _Node) -> dict[str, Any] | None:
    keys = ("key", "operator", "value", "effect", "tolerationSeconds")
    if not node.mapping(keys, hint=" like `{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}`"):
        return None
    key = node.get("key", _toleration_key, "")
    operator = node.get("operator", _one_of("Exists", "Equal"), "Equal")
    value = node.get("value", _label_value, "")
    effect = node.get("effect", _one_of("NoSchedule", "PreferNoSchedule", "NoExecute"), "")
    seconds = node.get("tolerationSeconds", _gpu, None)
    if operator == "Exists" and value:
        node.add("must be empty with `operator: Exists`", "value")
    if not key and operator != "Exists":
        node.add("required unless `operator: Exists` (which tolerates every taint)", "key")
    if seconds is not None and effect != "NoExecute":
        node.add("only applies with `effect: NoExecute`", "tolerationSeconds")
    out: dict[str, Any] = {"operator": operator}
    out.update({k: v for k, v in (("key", key), ("value", value), ("effect", effect)) if v})
    if seconds is not None:
        out["tolerationSeconds"] = seconds
    return out


def _toleration_key(value: Any) -> str:
    return _label_key(_non_empty(value))


def _one_of(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(f'`{c}`' for c in choices)}, got {_kind(value)}")
        return str(value)
    return check


def _volumes(node: _Node) -> tuple[Volume, ...]:
    if not isinstance(node.value, dict) or "volumes" not in node.value:
        return ()
    volumes: list[Volume] = []
    for entry in node.child("volumes").items():
        if not entry.mapping(("claim", "mount_path", "read_only"), required=("claim", "mount_path"),
                             hint=" like `{claim: datasets, mount_path: /data, read_only: true}`"):
            continue
        volume = Volume(entry.get("claim", _claim, ""), entry.get("mount_path", _mount_path, ""),
                        entry.get("read_only", _bool, False))
        clash = [v for v in volumes if v.mount_path and v.mount_path.rstrip("/") == volume.mount_path.rstrip("/")]
        if clash:
            entry.add(f"`{volume.mount_path}` is mounted twice", "mount_path")
        volumes.append(volume)
    return tuple(volumes)


def _metrics(node: _Node) -> tuple[Metric, ...]:
    if not isinstance(node.value, dict) or "metrics" not in node.value:
        return ()
    child = node.child("metrics")
    if not isinstance(child.value, dict):
        child.add(f"must be a mapping of metric names, like `{{accuracy: {{direction: higher, tolerance: 0.01}}}}`, "
                  f"got {_kind(child.value)}")
        return ()
    metrics: list[Metric] = []
    for name in child.value:
        if not isinstance(name, str) or not _METRIC.fullmatch(name):
            child.add("a metric name is letters, digits, `_`, `.` and `-`", _short(str(name)))
            continue
        entry = child.child(name)
        if not entry.mapping(("direction", "tolerance"), required=("direction",),
                             hint=" like `{direction: higher, tolerance: 0.01}`"):
            continue
        metrics.append(Metric(name, entry.get("direction", _direction, "higher"),
                              entry.get("tolerance", parse_tolerance, Tolerance(0.0))))
    return tuple(metrics)


def _federated(node: _Node, images: Collection[str] | None) -> FederatedConfig:
    node.mapping(_FEDERATED, required=("server", "client"))
    server_image, port, client_image = "", 8080, ""
    if isinstance(node.value, dict) and "server" in node.value:
        server = node.child("server")
        if server.mapping(("image", "port"), required=("image",), hint=" like `{image: server, port: 8080}`"):
            server_image = server.get("image", _image_ref_of(images), "")
            port = server.get("port", _between(1, 65535), 8080)
    if isinstance(node.value, dict) and "client" in node.value:
        client = node.child("client")
        if client.mapping(("image",), required=("image",), hint=" like `{image: client}`"):
            client_image = client.get("image", _image_ref_of(images), "")
    max_clients = node.get("max_clients", _between(1, MAX_CLIENTS_LIMIT), 16)
    max_rounds = node.get("max_rounds", _between(1, MAX_ROUNDS_LIMIT), 100)
    return FederatedConfig(
        server_image=server_image,
        server_port=port,
        client_image=client_image,
        clients=node.get("clients", _within_max(max_clients, "max_clients"), min(2, max_clients)),
        rounds=node.get("rounds", _within_max(max_rounds, "max_rounds"), min(3, max_rounds)),
        timeout=node.get("timeout", parse_duration, 3600),
        max_clients=max_clients,
        max_rounds=max_rounds,
        on_push=node.get("on_push", _bool, False),
        resources=_resources(node, Resources()),
    )


def _within_max(high: int, name: str) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        number = _integer(value)
        if not 1 <= number <= high:
            raise ValueError(f"must be between 1 and {name} ({high}), got {number}; raise `{name}` if you need more")
        return number
    return check
