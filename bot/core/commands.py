"""PR comment commands: a strict, sans-I/O parser.

Each command stands on its own line (anywhere in the comment, several per comment), a line that
GitHub renders as plain paragraph text: the comment is read as CommonMark (`markdown-it-py`), so
code (fenced, indented, spans), HTML blocks and inline HTML (comments opened mid-line), quotes and
list items (and fences inside them) never hold commands. Arguments
are validated here, before anything can reach a Job spec: integers are integers within bounds,
names are names, shas are hex. Text echoed back from a comment never carries a backtick, so a reply
cannot be made to mention anyone.
"""
from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass

from markdown_it import MarkdownIt
from markdown_it.token import Token

from bot.core.text import shown

COMMANDS = {
    "regression": "run the regression Job on the PR head and gate the merge on its verdict",
    "build": "build images for the PR head, tagged pr-<n>-<sha7> (never deployed): `/build [image ...]`",
    "train": "federated training run on the PR head: `/train [rounds=N] [clients=N]`",
    "redeploy": "point a deploy target at the build of a commit: `/redeploy <target> [<sha>]`",
    "test": "run the `tests:` of `.github/flops.yml` on the PR head (whatever `paths` say): `/test [name ...]`",
    "retest": "re-run the failed or cancelled flops checks of the head commit",
    "bisect": "find the default-branch commit that made a metric worse: `/bisect [<good> <bad>] [metric=<name>]`",
    "cancel": "stop this PR's running Jobs, or the repository's bisections: `/cancel [build|regression|train|test|bisect]`",
    "ok-to-test": "(maintainers) allow jobs for this fork PR's current head commit: `/ok-to-test [<sha>]`",
    "help": "list the commands and your permission",
}
CANCEL_KINDS = ("build", "regression", "train", "test", "bisect")
NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")  # image and deploy target names, as in flops.yml
NAME_MAX = 40
SHA = re.compile(r"[0-9a-f]{7,40}")
METRIC = re.compile(r"[A-Za-z0-9_.-]{1,100}")  # as `regression.metrics` names them
LINE = re.compile(r"/([A-Za-z][A-Za-z0-9_-]*)(?:\s+(.*))?")
MAX_COMMANDS = 10  # per comment; the rest are refused, not silently dropped
INT_DIGITS = 9


@dataclass(frozen=True)
class Bounds:
    max_rounds: int = 100
    max_clients: int = 16


@dataclass(frozen=True)
class Command:
    name: str
    line: str
    images: tuple[str, ...] = ()
    rounds: int | None = None
    clients: int | None = None
    target: str | None = None
    sha: str | None = None
    kind: str | None = None
    tests: tuple[str, ...] = ()  # `/test`'s names
    shas: tuple[str, ...] = ()  # `/bisect`'s good and bad commits (none: the latest baselines decide)
    metric: str | None = None  # `/bisect metric=<name>`


@dataclass(frozen=True)
class Refusal:
    line: str
    message: str


@dataclass(frozen=True)
class Parsed:
    commands: tuple[Command, ...] = ()
    refusals: tuple[Refusal, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.commands or self.refusals)


def command_lines(body: str) -> list[str]:
    """Lines that look like commands where GitHub renders plain text: in top-level paragraphs of
    the comment read as CommonMark (with GitHub's tables), not in code (fenced, indented, spans),
    HTML (blocks, or inline such as a `<!--` opened mid-line), quotes or list items. A line is one
    of its paragraph's lines holding nothing but text, exactly as typed (no escapes, no entities);
    a line that starts with a flops-bot command but is formatted (`/build **x**`) is listed too, as
    rendered, so that it is refused out loud rather than ignored (`formatted`)."""
    plain, formatted = _scan(body)
    return plain + formatted


def _scan(body: str) -> tuple[list[str], list[str]]:
    """(plain command lines, formatted lines that start with a known command), each as typed."""
    source = [line.strip() for line in body.splitlines()]
    plain: list[str] = []
    formatted: list[str] = []
    tokens = _markdown().parse(body)
    for opening, inline in zip(tokens, tokens[1:]):
        if opening.type != "paragraph_open" or opening.level != 0 or inline.children is None:
            continue
        typed_lines = source[opening.map[0]:opening.map[1]] if opening.map else source
        for text, is_plain in _paragraph_lines(inline.children):
            for line in (line.strip() for line in text.splitlines()):
                if is_plain and line in typed_lines and LINE.fullmatch(line):
                    plain.append(line)
                elif not is_plain and _name_of(line.split(" ", 1)[0]) in COMMANDS:
                    formatted += [typed for typed in typed_lines if typed.startswith(line) and typed != line][:1]
    return plain, [line for line in formatted if line not in plain]


def _paragraph_lines(children: list[Token]) -> list[tuple[str, bool]]:
    """A paragraph's lines, each with whether it is plain text: no inline HTML (which hides what
    follows it), emphasis or links; a code span after the command name is kept as typed
    (`/build a`x``). A line that is not plain keeps only the text before its first markup."""
    lines: list[tuple[str, bool]] = []
    text, plain = "", True
    for child in [*children, None]:
        if child is None or child.type in ("softbreak", "hardbreak"):
            if text:
                lines.append((text, plain))
            text, plain = "", True
        elif child.type == "text" and plain:
            text += child.content
        elif child.type == "code_inline" and text and plain:
            text += child.markup + child.content + child.markup
        else:
            plain = False
    return lines


@functools.cache
def _markdown() -> MarkdownIt:
    """GitHub's flavour as far as it decides what is a paragraph: CommonMark plus tables."""
    return MarkdownIt("commonmark").enable(["table", "strikethrough"])


def addressed(body: str) -> bool:
    """Does the comment name a flops-bot command at all (valid or not)?"""
    return any(_name_of(line) in COMMANDS for line in command_lines(body))


def parse(body: str, bounds: Bounds = Bounds()) -> Parsed:
    commands: list[Command] = []
    refusals: list[Refusal] = []
    plain, formatted = _scan(body)
    lines = list(dict.fromkeys(plain + formatted))  # the same line twice runs once
    for line in lines[:MAX_COMMANDS]:
        result = _formatted(line) if line in formatted else parse_line(line, bounds)
        if isinstance(result, Command):
            commands.append(result)
        else:
            refusals.append(result)
    if len(lines) > MAX_COMMANDS:
        extra = len(lines) - MAX_COMMANDS
        refusals.append(Refusal(lines[MAX_COMMANDS], f"at most {MAX_COMMANDS} commands per comment: this one and "
                                                     f"{extra - 1} more after it were not run."))
    return Parsed(tuple(commands), tuple(refusals))


def _formatted(line: str) -> Refusal:
    name = _name_of(line.split(" ", 1)[0])
    return Refusal(line, f"`/{name}` was written with formatting (bold, italics, a link or inline HTML), so it "
                         "was not run: write the command as plain text, on a line of its own.")


def parse_line(line: str, bounds: Bounds = Bounds()) -> Command | Refusal:
    match = LINE.fullmatch(line)
    if match is None:
        return Refusal(line, "not a command")
    name, rest = match.group(1), (match.group(2) or "").split()
    if name not in COMMANDS:
        return Refusal(line, f"`/{shown(name)}` is not a flops-bot command. {suggest(name)}")
    try:
        return _PARSERS[name](name, line, rest, bounds)
    except ValueError as exc:
        return Refusal(line, str(exc))


def suggest(name: str) -> str:
    """The closest valid command, else the list of them."""
    close = difflib.get_close_matches(name.lower().replace("_", "-"), COMMANDS, n=1, cutoff=0.6)
    if close:
        return f"Did you mean `/{close[0]}`?"
    return "The commands are " + ", ".join(f"`/{c}`" for c in COMMANDS) + "."


def _name_of(line: str) -> str:
    match = LINE.fullmatch(line)
    return match.group(1) if match else ""


def _no_args(name: str, line: str, args: list[str], bounds: Bounds) -> Command:
    if args:
        raise ValueError(f"`/{name}` takes no arguments (got `{shown(' '.join(args))}`).")
    return Command(name, line)


def _is_name(text: str) -> bool:
    return len(text) <= NAME_MAX and NAME.fullmatch(text) is not None


def _build(name: str, line: str, args: list[str], bounds: Bounds) -> Command:
    what = "a test name" if name == "test" else "an image name"
    for image in args:
        if not _is_name(image):
            raise ValueError(f"`{shown(image)}` is not {what} (at most {NAME_MAX} lowercase letters, "
                             f"digits and dashes, as in `{'tests' if name == 'test' else 'images'}:` of "
                             f"`.github/flops.yml`).")
    if name == "test":
        return Command(name, line, tests=tuple(dict.fromkeys(args)))
    return Command(name, line, images=tuple(dict.fromkeys(args)))


def _train(name: str, line: str, args: list[str], bounds: Bounds) -> Command:
    values: dict[str, int] = {}
    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq or key not in ("rounds", "clients"):
            raise ValueError(f"`/train` takes `rounds=N` and `clients=N`, not `{shown(arg)}`.")
        if key in values:
            raise ValueError(f"`{key}` is given twice.")
        limit = bounds.max_rounds if key == "rounds" else bounds.max_clients
        values[key] = _bounded_int(key, value, limit)
    return Command(name, line, rounds=values.get("rounds"), clients=values.get("clients"))


def _bounded_int(key: str, value: str, limit: int) -> int:
    if not value.isascii() or not value.isdigit():
        raise ValueError(f"`{key}` must be a whole number, got `{shown(value, 20)}`.")
    digits = value.lstrip("0") or "0"
    if len(digits) > INT_DIGITS or not 1 <= int(digits) <= limit:
        got = digits if len(digits) <= INT_DIGITS else f"a {len(digits)}-digit number"
        raise ValueError(f"`{key}` must be between 1 and {limit} (the repository's `max_{key}`), got {got}.")
    return int(digits)


def _sha(text: str) -> str:
    sha = text.lower()
    if SHA.fullmatch(sha) is None:
        raise ValueError(f"`{shown(text)}` is not a commit sha (7 to 40 hex characters).")
    return sha


def _redeploy(name: str, line: str, args: list[str], bounds: Bounds) -> Command:
    if not 1 <= len(args) <= 2:
        raise ValueError("usage: `/redeploy <target> [<sha>]`, e.g. `/redeploy dev 1a2b3c4`.")
    target = args[0]
    if not _is_name(target):
        raise ValueError(f"`{shown(target)}` is not a deploy target name (as in `deploy:` of `.github/flops.yml`).")
    return Command(name, line, target=target, sha=_sha(args[1]) if len(args) == 2 else None)


def _ok_to_test(name: str, line: str, args: list[str], bounds: Bounds) -> Command:
    if len(args) > 1:
        raise ValueError("usage: `/ok-to-test [<sha>]` (the sha pins the commit you reviewed).")
    return Command(name, line, sha=_sha(args[0]) if args else None)


def _cancel(name: str, line: str, args: list[str], bounds: Bounds) -> Command:
    if len(args) > 1 or (args and args[0] not in CANCEL_KINDS):
        raise ValueError(f"usage: `/cancel [{'|'.join(CANCEL_KINDS)}]`.")
    return Command(name, line, kind=args[0] if args else None)


def _bisect(name: str, line: str, args: list[str], bounds: Bounds) -> Command:
    usage = "usage: `/bisect [<good-sha> <bad-sha>] [metric=<name>]`, e.g. `/bisect 1a2b3c4 5d6e7f8 metric=accuracy`."
    metrics = [arg.removeprefix("metric=") for arg in args if arg.startswith("metric=")]
    shas = [arg for arg in args if not arg.startswith("metric=")]
    if len(metrics) > 1 or len(shas) not in (0, 2):
        raise ValueError(usage)
    if metrics and METRIC.fullmatch(metrics[0]) is None:
        raise ValueError(f"`{shown(metrics[0])}` is not a metric name (letters, digits, `_`, `.` and `-`, as in "
                         f"`regression.metrics`).")
    good, bad = (_sha(s) for s in shas) if shas else ("", "")
    if shas and good == bad:
        raise ValueError("the good and the bad commit are the same.")
    return Command(name, line, shas=(good, bad) if shas else (), metric=metrics[0] if metrics else None)


_PARSERS = {
    "regression": _no_args, "retest": _no_args, "ok-to-test": _ok_to_test, "help": _no_args,
    "build": _build, "test": _build, "train": _train, "redeploy": _redeploy, "cancel": _cancel, "bisect": _bisect,
}


def help_text(permission: str) -> str:
    cells = {name: text.replace("|", "\\|") for name, text in COMMANDS.items()}  # a bare | would split the cell
    rows = "\n".join(f"| `/{name}` | {text} |" for name, text in cells.items())
    allowed = permission in ("admin", "maintain", "write")
    return (f"| command | what it does |\n|---|---|\n{rows}\n\nYour permission on this repository: "
            f"**{permission}** ({'you can run these commands' if allowed else 'commands need write access'}).")
