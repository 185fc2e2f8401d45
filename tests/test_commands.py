"""The comment-command parser (bot.commands): a property-based test over arbitrary text, then a
table of every command and every refusal. Pure functions: no server needed."""
from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.core.commands import (
    CANCEL_KINDS,
    COMMANDS,
    MAX_COMMANDS,
    Bounds,
    Command,
    Parsed,
    Refusal,
    addressed,
    command_lines,
    help_text,
    parse,
    parse_line,
)

NAME_RULE = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")  # as `images[].name` / `deploy[].name` in flops.yml
SHA_RULE = re.compile(r"[0-9a-f]{7,40}")

# --- strategies: arbitrary text, and text shaped like commands so every branch is reached ---------------

TOKENS = st.one_of(
    st.sampled_from(["server", "client", "dev", "prod", "build", "train", "regression", "a", "x-1", "-x", "x-",
                     "Server", "a_b", "a" * 40, "a" * 41, "1a2b3c4", "1A2B3C4", "abcdef", "0" * 40, "f" * 41,
                     "g123456", "rounds=3", "clients=2", "rounds=0", "rounds=-1", "rounds=1.5", "rounds=",
                     "rounds=٣", "rounds=00000000000000000003", "rounds=99999999999999999999", "clients=17",
                     "foo=1", "rounds", "=3", "`@org/team`", "@everyone", "<script>", "$(id)", "; rm -rf /"]),
    st.builds(lambda k, n: f"{k}={n}", st.sampled_from(["rounds", "clients"]), st.integers(-5, 10**12)),
    st.text(min_size=1, max_size=12).map(lambda t: "".join(t.split()) or "z"),
)
NAMES = st.one_of(st.sampled_from(sorted(COMMANDS)),
                  st.sampled_from(["bulid", "Build", "ok_to_test", "retset", "cc", "deploy", "x", "REGRESSION"]),
                  st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,12}", fullmatch=True))
SPACE = st.sampled_from([" ", "  ", "\t", "\u00a0", " \u3000 "])
COMMAND_LINE = st.builds(lambda name, sep, args, pad: f"{pad}/{name}" + "".join(sep + a for a in args),
                         NAMES, SPACE, st.lists(TOKENS, max_size=4), st.sampled_from(["", " ", "  ", "    ", "\t", "> "]))
IMAGE = st.from_regex(r"[a-z0-9](?:[-a-z0-9]{0,38}[a-z0-9])?", fullmatch=True)
HEX = st.text(alphabet="0123456789abcdefABCDEF", min_size=6, max_size=41)
ARGS = {  # argument lists close to (and often exactly) what each command accepts
    "regression": st.just([]), "retest": st.just([]), "help": st.just([]),
    "build": st.lists(IMAGE, max_size=3),
    "train": st.lists(st.builds(lambda k, n: f"{k}={n}", st.sampled_from(["rounds", "clients"]),
                                st.integers(0, 120)), max_size=2),
    "redeploy": st.tuples(IMAGE, st.lists(HEX, max_size=1)).map(lambda t: [t[0], *t[1]]),
    "ok-to-test": st.lists(HEX, max_size=1),
    "cancel": st.lists(st.sampled_from(CANCEL_KINDS), max_size=1),
}
NEAR_VALID_LINE = st.sampled_from(sorted(ARGS)).flatmap(
    lambda name: ARGS[name].map(lambda args: " ".join([f"/{name}", *args])))
FENCE = st.sampled_from(["```", "~~~", "````", "```python", "<!--", "-->", "<!-- /build -->"])
LINE = st.one_of(NEAR_VALID_LINE, COMMAND_LINE, FENCE, st.text(max_size=40))
BODY = st.one_of(st.text(), st.lists(LINE, max_size=20).map("\n".join),
                 st.lists(LINE, max_size=20).map("\r\n".join))
BOUNDS = st.builds(Bounds, max_rounds=st.integers(1, 100_000), max_clients=st.integers(1, 1000))


def assert_valid(command: Command, bounds: Bounds) -> None:
    """What may reach a Job spec: every argument of an accepted command is of its kind and in bounds."""
    assert command.name in COMMANDS
    assert command.line.startswith("/" + command.name)
    for image in command.images:
        assert len(image) <= 40 and NAME_RULE.fullmatch(image), image
    assert len(set(command.images)) == len(command.images)
    if command.rounds is not None:
        assert type(command.rounds) is int and 1 <= command.rounds <= bounds.max_rounds
    if command.clients is not None:
        assert type(command.clients) is int and 1 <= command.clients <= bounds.max_clients
    if command.target is not None:
        assert len(command.target) <= 40 and NAME_RULE.fullmatch(command.target), command.target
    if command.sha is not None:
        assert SHA_RULE.fullmatch(command.sha), command.sha
    assert command.kind is None or command.kind in CANCEL_KINDS
    expected = {"build": {"images"}, "test": {"tests"}, "train": {"rounds", "clients"}, "redeploy": {"target", "sha"},
                "ok-to-test": {"sha"}, "cancel": {"kind"}}.get(command.name, set())
    set_fields = {f for f in ("images", "rounds", "clients", "target", "sha", "kind", "tests") if getattr(command, f)}
    assert set_fields <= expected, (command.name, set_fields)
    if command.name == "redeploy":
        assert command.target is not None


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODY, bounds=BOUNDS)
@example(body="/train rounds=101 clients=16", bounds=Bounds())
@example(body="/redeploy dev 1a2b3c\n/build Server\n/cancel deploy", bounds=Bounds())
@example(body="```\n/build\n~~~\n/regression\n```\n/retest", bounds=Bounds())
def test_parser_never_raises_and_never_accepts_an_invalid_argument(body: str, bounds: Bounds) -> None:
    parsed = parse(body, bounds)
    assert isinstance(parsed, Parsed)
    stripped = {line.strip() for line in body.splitlines()}
    for command in parsed.commands:
        assert_valid(command, bounds)
        assert command.line in stripped  # a command is a whole line of the comment, nothing invented
        assert parse_line(command.line, bounds) == command  # parsing is a pure function of the line
    for refusal in parsed.refusals:
        assert refusal.line in stripped and refusal.message
        # echoed user text never breaks out of its code span (a reply cannot be made to @mention anyone)
        assert refusal.message.count("`") % 2 == 0, refusal.message
    lines = list(dict.fromkeys(command_lines(body)))  # every command-looking line is answered, none dropped
    answered = len(parsed.commands) + len(parsed.refusals)
    assert answered == (len(lines) if len(lines) <= MAX_COMMANDS else MAX_COMMANDS + 1)
    assert addressed(body) is any(line.split()[0][1:] in COMMANDS for line in lines)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(["rounds", "clients"]), value=st.one_of(st.integers(-10**15, 10**15), st.integers(0, 200)),
       zeros=st.integers(0, 3), bounds=BOUNDS)
def test_train_accepts_an_integer_exactly_when_it_is_within_the_repository_bounds(
        key: str, value: int, zeros: int, bounds: Bounds) -> None:
    text = str(value) if value < 0 else "0" * zeros + str(value)
    result = parse_line(f"/train {key}={text}", bounds)
    limit = bounds.max_rounds if key == "rounds" else bounds.max_clients
    if 1 <= value <= limit:
        assert isinstance(result, Command) and getattr(result, key) == value
    else:
        assert isinstance(result, Refusal) and f"`{key}`" in result.message


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="0123456789abcdefABCDEFgxyz", min_size=0, max_size=45))
def test_redeploy_accepts_a_sha_exactly_when_it_is_7_to_40_hex_characters(text: str) -> None:
    result = parse_line(f"/redeploy dev {text}") if text else parse_line("/redeploy dev")
    if not text:
        assert isinstance(result, Command) and result.sha is None
    elif SHA_RULE.fullmatch(text.lower()):
        assert isinstance(result, Command) and result.sha == text.lower()
    else:
        assert isinstance(result, Refusal) and "not a commit sha" in result.message


@settings(max_examples=200, deadline=None)
@given(body=st.lists(COMMAND_LINE, max_size=8).map("\n".join), fence=st.sampled_from(["```", "~~~", "````"]))
def test_nothing_inside_a_code_fence_is_a_command(body: str, fence: str) -> None:
    assert parse(f"{fence}\n{body}\n{fence}") == Parsed()


# --- table: every command -------------------------------------------------------------------------------

ACCEPTED = [
    ("/regression", Command("regression", "/regression")),
    ("/retest", Command("retest", "/retest")),
    ("/help", Command("help", "/help")),
    ("/ok-to-test", Command("ok-to-test", "/ok-to-test")),
    ("/ok-to-test 1A2B3C4", Command("ok-to-test", "/ok-to-test 1A2B3C4", sha="1a2b3c4")),
    ("/build", Command("build", "/build")),
    ("/build server", Command("build", "/build server", images=("server",))),
    ("/build server client server", Command("build", "/build server client server", images=("server", "client"))),
    ("/train", Command("train", "/train")),
    ("/train rounds=5", Command("train", "/train rounds=5", rounds=5)),
    ("/train clients=3 rounds=100", Command("train", "/train clients=3 rounds=100", rounds=100, clients=3)),
    ("/train rounds=007", Command("train", "/train rounds=007", rounds=7)),
    ("/redeploy dev", Command("redeploy", "/redeploy dev", target="dev")),
    ("/redeploy dev 1a2b3c4", Command("redeploy", "/redeploy dev 1a2b3c4", target="dev", sha="1a2b3c4")),
    ("/redeploy prod-eu " + "AB" * 20, Command("redeploy", "/redeploy prod-eu " + "AB" * 20, target="prod-eu",
                                               sha="ab" * 20)),
    ("/cancel", Command("cancel", "/cancel")),
    ("/cancel build", Command("cancel", "/cancel build", kind="build")),
    ("/cancel regression", Command("cancel", "/cancel regression", kind="regression")),
    ("/cancel train", Command("cancel", "/cancel train", kind="train")),
    ("/cancel test", Command("cancel", "/cancel test", kind="test")),
    ("/cancel bisect", Command("cancel", "/cancel bisect", kind="bisect")),
    ("/bisect", Command("bisect", "/bisect")),
    ("/bisect metric=accuracy", Command("bisect", "/bisect metric=accuracy", metric="accuracy")),
    ("/bisect 1a2b3c4 " + "AB" * 20 + " metric=val.loss",
     Command("bisect", "/bisect 1a2b3c4 " + "AB" * 20 + " metric=val.loss", shas=("1a2b3c4", "ab" * 20),
             metric="val.loss")),
    ("/test", Command("test", "/test")),
    ("/test unit gpu-smoke unit", Command("test", "/test unit gpu-smoke unit", tests=("unit", "gpu-smoke"))),
    ("  /build\tserver  ", Command("build", "/build\tserver", images=("server",))),
]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED, ids=[t for t, _ in ACCEPTED])
def test_each_command_parses(text: str, expected: Command) -> None:
    assert parse(text) == Parsed((expected,))


def test_every_command_of_the_contract_is_in_the_table_and_in_help() -> None:
    assert {c.name for _, c in ACCEPTED} == set(COMMANDS) == {
        "regression", "build", "train", "redeploy", "test", "retest", "cancel", "ok-to-test", "help", "bisect"}


REFUSED = [
    ("/bisect 1a2b3c4", "usage: `/bisect [<good-sha> <bad-sha>] [metric=<name>]`"),
    ("/bisect 1a2b3c4 5d6e7f8 9a9a9a9", "usage: `/bisect [<good-sha> <bad-sha>]"),
    ("/bisect main HEAD", "`main` is not a commit sha"),
    ("/bisect metric=a metric=b", "usage: `/bisect"),
    ("/bisect metric=$(id)", "`$(id)` is not a metric name"),
    ("/bisect 1a2b3c4 1A2B3C4", "the good and the bad commit are the same."),
    ("/cancel everything", "usage: `/cancel [build|regression|train|test|bisect]`."),
    ("/regression now", "`/regression` takes no arguments (got `now`)."),
    ("/retest all", "`/retest` takes no arguments (got `all`)."),
    ("/help me", "`/help` takes no arguments (got `me`)."),
    ("/ok-to-test abc1234 please", "usage: `/ok-to-test [<sha>]`"),
    ("/ok-to-test latest", "`latest` is not a commit sha (7 to 40 hex characters)."),
    ("/build Server", "`Server` is not an image name"),
    ("/build -server", "`-server` is not an image name"),
    ("/build server-", "`server-` is not an image name"),
    ("/build a_b", "`a_b` is not an image name"),
    ("/build " + "a" * 41, "is not an image name (at most 40"),
    ("/build $(id)", "`$(id)` is not an image name"),
    ("/train rounds=0", "`rounds` must be between 1 and 100 (the repository's `max_rounds`), got 0."),
    ("/train rounds=101", "`rounds` must be between 1 and 100 (the repository's `max_rounds`), got 101."),
    ("/train clients=17", "`clients` must be between 1 and 16 (the repository's `max_clients`), got 17."),
    ("/train rounds=" + "9" * 30, "got a 30-digit number."),
    ("/train rounds=-1", "`rounds` must be a whole number, got `-1`."),
    ("/train rounds=1.5", "`rounds` must be a whole number, got `1.5`."),
    ("/train rounds=", "`rounds` must be a whole number, got ``."),
    ("/train rounds=٣", "`rounds` must be a whole number, got `٣`."),
    ("/train rounds=5 rounds=6", "`rounds` is given twice."),
    ("/train rounds 5", "`/train` takes `rounds=N` and `clients=N`, not `rounds`."),
    ("/train epochs=5", "`/train` takes `rounds=N` and `clients=N`, not `epochs=5`."),
    ("/train Rounds=5", "not `Rounds=5`."),
    ("/redeploy", "usage: `/redeploy <target> [<sha>]`"),
    ("/redeploy dev 1a2b3c4 now", "usage: `/redeploy <target> [<sha>]`"),
    ("/redeploy Dev", "`Dev` is not a deploy target name"),
    ("/redeploy ../etc 1a2b3c4", "`../etc` is not a deploy target name"),
    ("/redeploy dev 1a2b3c", "`1a2b3c` is not a commit sha (7 to 40 hex characters)."),
    ("/redeploy dev " + "a" * 41, "is not a commit sha"),
    ("/redeploy dev main", "`main` is not a commit sha"),
    ("/cancel deploy", "usage: `/cancel [build|regression|train|test|bisect]`."),
    ("/cancel build train", "usage: `/cancel [build|regression|train|test|bisect]`."),
    ("/bulid", "`/bulid` is not a flops-bot command. Did you mean `/build`?"),
    ("/Build server", "`/Build` is not a flops-bot command. Did you mean `/build`?"),
    ("/regresion", "Did you mean `/regression`?"),
    ("/retset", "Did you mean `/retest`?"),
    ("/ok_to_test", "Did you mean `/ok-to-test`?"),
    ("/oktotest", "Did you mean `/ok-to-test`?"),
    ("/deploy dev", "Did you mean `/redeploy`?"),
    ("/cancle", "Did you mean `/cancel`?"),
    ("/xyzzy", "`/xyzzy` is not a flops-bot command. The commands are `/regression`, `/build`, `/train`, "
               "`/redeploy`, `/test`, `/retest`, `/bisect`, `/cancel`, `/ok-to-test`, `/help`."),
]


@pytest.mark.parametrize(("text", "message"), REFUSED, ids=[t[:40] for t, _ in REFUSED])
def test_each_refusal_names_the_problem(text: str, message: str) -> None:
    parsed = parse(text)
    assert parsed.commands == ()
    [refusal] = parsed.refusals
    assert refusal.line == text.strip()
    assert message in refusal.message


def test_bounds_come_from_the_repository() -> None:
    bounds = Bounds(max_rounds=500, max_clients=2)
    assert parse_line("/train rounds=500 clients=2", bounds) == Command("train", "/train rounds=500 clients=2",
                                                                        rounds=500, clients=2)
    refusal = parse_line("/train clients=3", bounds)
    assert isinstance(refusal, Refusal) and "between 1 and 2" in refusal.message


def test_echoed_text_cannot_escape_its_code_span() -> None:
    [refusal] = parse("/build a`@acme/everyone`").refusals
    assert refusal.message.split("`")[1] == "a'@acme/everyone'"  # still inside the first code span


# --- table: where commands are (and are not) found ------------------------------------------------------

@pytest.mark.parametrize(("body", "lines"), [
    ("/build server\nand then\n/retest", ["/build server", "/retest"]),
    ("Looks good.\r\n\r\n/regression\r\n", ["/regression"]),
    ("please /build this", []),
    ("> /build\n>/regression", []),
    ("    /build\n\t/regression", []),
    ("`/build`", []),
    ("```\n/build\n```\n/retest", ["/retest"]),
    ("~~~sh\n/build\n```\n/regression\n~~~\n/retest", ["/retest"]),  # ``` does not close a ~~~ fence
    ("````\n```\n/build\n````\n/retest", ["/retest"]),  # a shorter fence does not close a longer one
    ("<!-- /build -->\n/retest", ["/retest"]),
    ("<!--\n/build\n-->\n/retest", ["/retest"]),
    ("/usr/bin/python crashed", []),
    ("/build server\n/build server", ["/build server", "/build server"]),
    # issue #16 finding 10: what GitHub does not show as text holds no command
    ("Thanks! <!-- hidden\n/build\n/redeploy prod\n-->\n/retest", ["/retest"]),  # HTML comment opened mid-line
    ("- step one\n  ```\n  /build\n  ```\n\n/retest", ["/retest"]),  # a code fence inside a list item
    ("1. first\n\n   ~~~\n   /regression\n   ~~~", []),
    ("- /build\n* /regression\n1. /retest", []),  # list items are not paragraphs of the comment
    ("<details>\n/build\n</details>\n\n/retest", ["/retest"]),  # an HTML block
    ("see `x\n/build\ny` here\n/retest", ["/retest"]),  # a code span across lines
    ("> quote\n/build", []),  # a lazy continuation line of the quote
    ("\\/build\n&#47;build", []),  # shown as /build, typed otherwise: not a command
    ("/build server <!-- x -->", ["/build server <!-- x -->"]),  # inline HTML hides part of it: refused (below)
    ("Done.\n/regression  \n/retest", ["/regression", "/retest"]),  # soft and hard line breaks
    ("/build a`x`", ["/build a`x`"]),  # a code span after the command name is an argument, as typed
    ("<!-- unclosed\n/build", []),  # an HTML block runs to the end of the comment
    ("x <!-- unclosed\n/build", ["/build"]),  # not a comment at all: GitHub shows `<!--` and /build
])
def test_command_lines(body: str, lines: list[str]) -> None:
    assert command_lines(body) == lines


@pytest.mark.parametrize("line", ["/build **server**", "/regression *now*", "/build [server](https://x.example)",
                                  "/build server <!-- x -->", "/redeploy <b>prod</b>"])
def test_a_formatted_command_is_refused_out_loud_not_run_and_not_ignored(line: str) -> None:
    parsed = parse(f"Please:\n{line}\n/retest")
    assert [c.line for c in parsed.commands] == ["/retest"]
    assert [r.line for r in parsed.refusals] == [line]
    assert "plain text" in parsed.refusals[0].message and addressed(line)


def test_formatting_that_does_not_start_with_a_command_is_not_ours() -> None:
    assert command_lines("**/build**\n/cc **someone**\nsee /build *later*") == []


def test_several_commands_per_comment_and_repeats_run_once() -> None:
    parsed = parse("/build server\n/build server\n/cancel regression\n/nope")
    assert [c.line for c in parsed.commands] == ["/build server", "/cancel regression"]
    assert [r.line for r in parsed.refusals] == ["/nope"]


def test_at_most_ten_commands_per_comment() -> None:
    body = "\n".join(f"/build image-{i}" for i in range(MAX_COMMANDS + 5))
    parsed = parse(body)
    assert len(parsed.commands) == MAX_COMMANDS
    [refusal] = parsed.refusals
    assert refusal.line == f"/build image-{MAX_COMMANDS}"
    assert f"at most {MAX_COMMANDS} commands per comment" in refusal.message and "4 more" in refusal.message


@pytest.mark.parametrize(("body", "expected"), [
    ("/build", True), ("/train rounds=x", True), ("text\n/help", True),
    ("/cc @bob", False), ("/bulid", False), ("```\n/build\n```", False), ("no commands", False),
])
def test_addressed_means_a_flops_command_is_named(body: str, expected: bool) -> None:
    assert addressed(body) is expected


@pytest.mark.parametrize("permission", ["admin", "maintain", "write", "triage", "read", "none"])
def test_help_lists_every_command_in_a_well_formed_table_and_the_permission(permission: str) -> None:
    text = help_text(permission)
    rows = [line for line in text.splitlines() if line.startswith("| `/")]
    assert [row.split("`")[1] for row in rows] == [f"/{name}" for name in COMMANDS]
    for row in rows:  # a bare `|` inside a cell would split it: only the escaped kind is allowed
        assert len(re.findall(r"(?<!\\)\|", row)) == 3, row
    assert f"**{permission}**" in text
    assert ("you can run these commands" in text) is (permission in ("admin", "maintain", "write"))
