"""PR comment commands: a strict, sans-I/O parser.

Each command stands on its own line (anywhere in the comment, several per comment); lines inside
fenced code blocks and quotes (`> `) are never commands. Arguments are validated here, before
anything can reach a Job spec: integers are integers within bounds, names are names, shas are hex.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

COMMANDS = {
    "regression": "run the regression Job on the PR head and gate the merge on its verdict",
    "build": "build images for the PR head, tagged pr-<n>-<sha7> (never deployed): `/build [image ...]`",
    "train": "federated training run on the PR head: `/train [rounds=N] [clients=N]`",
    "redeploy": "point a deploy target at the build of a commit: `/redeploy <target> [<sha>]`",
    "retest": "re-run the failed or cancelled flops checks of the head commit",
    "cancel": "stop this PR's running Jobs: `/cancel [build|regression|train]`",
    "ok-to-test": "(maintainers) allow jobs for this fork PR's current head commit",
    "help": "list the commands and your permission",
}
CANCEL_KINDS = ("build", "regression", "train")
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SHA = re.compile(r"^[0-9a-f]{7,40}$")
LINE = re.compile(r"^/([a-z][a-z0-9-]*)(?:\s+(.*))?$")
MAX_INT = 10_000


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
    """Lines that look like commands, outside code fences and quotes."""
    found, fenced = [], False
    for raw in body.splitlines():
        line = raw.strip()
        if line.startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if fenced or raw.startswith(("    ", "\t")) or line.startswith(">"):
            continue
        if LINE.match(line):
            found.append(line)
    return found


def parse(body: str, bounds: Bounds = Bounds()) -> Parsed:
    commands: list[Command] = []
    refusals: list[Refusal] = []
    for line in command_lines(body):
        result = parse_line(line, bounds)
        if isinstance(result, Command):
            commands.append(result)
        else:
            refusals.append(result)
    return Parsed(tuple(commands), tuple(refusals))


def parse_line(line: str, bounds: Bounds = Bounds()) -> Command | Refusal:
    match = LINE.match(line)
    if match is None:
        return Refusal(line, "not a command")
    name, rest = match.group(1), (match.group(2) or "").split()
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1, cutoff=0.5)
        hint = f" Did you mean `/{close[0]}`?" if close else " Try `/help`."
        return Refusal(line, f"`/{name}` is not a flops-bot command.{hint}")
    try:
        return _PARSERS[name](name, line, rest, bounds)
    except ValueError as exc:
        return Refusal(line, str(exc))


def _no_args(name: str, line: str, args: list[str], bounds: Bounds) -> Command:
    if args:
        raise ValueError(f"`/{name}` takes no arguments (got `{' '.join(args)[:60]}`).")
    return Command(name, line)


def _build(name: str, line: str, args: list[str], bounds: Bounds) -> Command:
    for image in args:
        if not NAME.match(image) or len(image) > 40:
            raise ValueError(f"`{image[:60]}` is not an image name (lowercase letters, digits and dashes).")
    return Command(name, line, images=tuple(dict.fromkeys(args)))


def _train(name: str, line: str, args: list[str], bounds: Bounds) -> Command:
    values: dict[str, int] = {}
    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq or key not in ("rounds", "clients"):
            raise ValueError(f"`/train` takes `rounds=N` and `clients=N`, not `{arg[:60]}`.")
        if key in values:
            raise ValueError(f"`{key}` is given twice.")
        limit = bounds.max_rounds if key == "rounds" else bounds.max_clients
        values[key] = _bounded_int(key, value, limit)
    return Command(name, line, rounds=values.get("rounds"), clients=values.get("clients"))


def _bounded_int(key: str, value: str, limit: int) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 6:
        raise ValueError(f"`{key}` must be a whole number, got `{value[:20]}`.")
    number = int(value)
    if not 1 <= number <= limit:
        raise ValueError(f"`{key}` must be between 1 and {limit} (the repository's limit), got {number}.")
    return number


def _redeploy(name: str, line: str, args: list[str], bounds: Bounds) -> Command:
    if not 1 <= len(args) <= 2:
        raise ValueError("usage: `/redeploy <target> [<sha>]`.")
    target = args[0]
    if not NAME.match(target) or len(target) > 40:
        raise ValueError(f"`{target[:60]}` is not a deploy target name.")
    sha = args[1].lower() if len(args) == 2 else None
    if sha is not None and not SHA.match(sha):
        raise ValueError(f"`{args[1][:60]}` is not a commit sha (7 to 40 hex characters).")
    return Command(name, line, target=target, sha=sha)


def _cancel(name: str, line: str, args: list[str], bounds: Bounds) -> Command:
    if len(args) > 1 or (args and args[0] not in CANCEL_KINDS):
        raise ValueError(f"usage: `/cancel [{'|'.join(CANCEL_KINDS)}]`.")
    return Command(name, line, kind=args[0] if args else None)


_PARSERS = {
    "regression": _no_args, "retest": _no_args, "ok-to-test": _no_args, "help": _no_args,
    "build": _build, "train": _train, "redeploy": _redeploy, "cancel": _cancel,
}


def help_text(permission: str) -> str:
    rows = "\n".join(f"| `/{name}` | {text} |" for name, text in COMMANDS.items())
    allowed = permission in ("admin", "maintain", "write")
    return (f"| command | what it does |\n|---|---|\n{rows}\n\nYour permission on this repository: "
            f"**{permission}** ({'you can run these commands' if allowed else 'commands need write access'}).")
