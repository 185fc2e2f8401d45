"""What a workload or a user wrote never becomes markdown structure (issue 16, finding 5).

`bot.core.text` is checked alone by rendering its output the way GitHub does (tests/markdown.py);
then hostile workloads run on the test bed: a metrics.json whose metric names fake an approval and
ping a team, whose links are `javascript:` or break out of the link syntax, a model file named like
HTML, a 100k-character log line. The bodies the GitHub emulator received are read as rendered.
"""
from __future__ import annotations

import json
import re

import pytest

from bot.core import text
from bot.flows import regression
from tests import markdown
from tests.conftest import NAMESPACE, Bed, wait_for
from tests.emulators.github import MAX_TEXT
from tests.test_federated import REPO as FL_REPO
from tests.test_federated import head_of, report_of, start_run, write_output
from tests.test_regression import REPO, approve, completed, finish, job_for, open_pr, push_to_main, setup_repo, sticky

FAKE_APPROVAL = "**Approved by @acme/security**"
HOSTILE = [FAKE_APPROVAL, "<img src=x onerror=alert(1)>", "[click](http://evil)", "](http://evil)",
           "`code` | cell | break", "# heading", "- item", "1. item", "> quote", "<!-- hidden -->", "~~gone~~",
           "![img](http://evil/x.png)", "line\nbreak\r\n# heading", "@everyone and @acme/team", "&#64;acme",
           "https://evil.example/login", "www.evil.example", "$x^2$", "\\*escaped\\*", "{{ template }}",
           "a\u202eevil", "<script>alert(1)</script>", "_under_ *star* +plus+"]


def visible(value: str) -> str:
    """What a reader sees of `escape(value)`: the same characters, on one line, bidi controls gone."""
    return re.sub(r"[\r\n]+", " ", value).replace("\u202e", "")


@pytest.mark.parametrize("value", HOSTILE)
def test_escaped_text_reads_exactly_as_written_and_has_no_structure(value: str) -> None:
    escaped = text.escape(value)
    html = markdown.html(f"| a | b |\n|---|---|\n| {escaped} | x |\n\n- {escaped}")
    assert re.findall(r"<(\w+)", html) == ["table", "thead", "tr", "th", "th", "tbody", "tr", "td", "td",
                                         "ul", "li"], html  # one cell, one list item: no other element
    assert markdown.text(escaped).replace(text.ZWSP, "") == visible(value)
    assert not re.search(r"@[A-Za-z0-9]", markdown.text(escaped)), "a mention would ping"
    assert "://" not in markdown.text(escaped) and "www." not in markdown.text(escaped), "an autolink"
    assert text.plain(escaped) == visible(value)  # a check-run title (plain text) shows no backslashes


def test_escaped_text_is_capped() -> None:
    assert len(markdown.text(text.escape("x" * 10_000))) == text.INLINE
    assert markdown.text(text.escape("x" * 10_000, 50)).endswith("…")


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:text/html,<b>x</b>", "http://a b", "https://x\n",
                                 "https://x/\u0000", "ftp://files.example/x", "//evil.example", "https://",
                                 "http://evil)](http://x", 'https://x/"onclick', "https://x/<img>", 42, None])
def test_a_link_is_made_only_of_a_plain_http_url(url: object) -> None:
    body = text.link("](http://evil)", url)
    assert markdown.links(body) == {}
    assert "<" not in markdown.html(body).replace("<p>", "").replace("</p>", "")


def test_a_good_link_keeps_its_url_and_its_label_reads_as_written() -> None:
    url = "https://mlflow.example.com/#/experiments/1/runs/abc?x=(1)&y=2"
    assert markdown.links(text.link("](http://evil) **MLflow**", url)) == {
        "](http://evil) **MLflow**": "https://mlflow.example.com/#/experiments/1/runs/abc?x=%281%29&y=2"}


def test_a_code_block_cannot_be_closed_by_its_content() -> None:
    tail = "ok\n```\n# not a heading @acme <img src=x>\n````\n"
    html = markdown.html("before\n\n" + text.code_block(tail) + "\n\nafter")
    assert re.findall(r"<(\w+)", html) == ["p", "pre", "code", "p"]
    assert "# not a heading @acme &lt;img src=x&gt;" in html


def test_a_long_tail_keeps_its_end_with_a_note() -> None:
    block = text.code_block("a" * 50_000 + "THE END", limit=1000)
    assert len(block) < 1200 and "THE END" in block and "truncated" in markdown.text(block)


def test_clip_keeps_githubs_limit_with_a_visible_note() -> None:
    clipped = text.clip("x" * 100_000)
    assert len(clipped) <= 65_535 and "truncated" in clipped.splitlines()[-1]
    assert text.clip("short") == "short"


def rendered_ok(body: str) -> None:
    """No fake approval, ping, script link or injected HTML in what GitHub shows of `body`."""
    html = markdown.html(body)
    assert "<strong>Approved" not in html and "<img" not in html and "<script" not in html
    assert not re.search(r"@acme", markdown.text(body)), "the workload pinged @acme"
    hrefs = set(markdown.links(body).values())
    assert not {h for h in hrefs if not h.startswith(("http://", "https://")) or "evil" in h}, hrefs


async def test_hostile_metrics_json_is_shown_as_text_in_the_check_and_the_comment(bed: Bed) -> None:
    setup_repo(bed)
    sha = await push_to_main(bed, {"train.py": "print('base')\n"})
    await finish(bed, job_for(bed, sha), {"accuracy": 0.9, "loss": 0.2, FAKE_APPROVAL: 1.0, "<img src=x>": 2.0})
    baseline = await wait_for(lambda: completed(bed, sha), what="baseline report")
    rendered_ok(baseline["output"]["summary"])
    assert FAKE_APPROVAL.replace("@", "@" + text.ZWSP) in markdown.text(baseline["output"]["summary"])

    head = open_pr(bed, {"train.py": "print('pr')\n"})
    await approve(bed)
    links = {"MLflow run": "https://mlflow.example.com/r/1", "docs": "javascript:alert(1)",
             "](http://evil)": "https://ok.example/x", "ping @acme/everyone": "https://ok.example/y"}
    await finish(bed, job_for(bed, head), {"accuracy": 0.9, "loss": 0.2, FAKE_APPROVAL: 3.0}, links)
    run = await wait_for(lambda: completed(bed, head), what="regression report")
    await bed.settle()
    [note] = sticky(bed)
    for body in (run["output"]["summary"], note["body"]):
        rendered_ok(body)
        shown = markdown.links(body)
        assert shown["MLflow run"] == links["MLflow run"] and shown["](http://evil)"] == "https://ok.example/x"
        assert "docs" not in shown and "javascript" not in markdown.html(body)
    assert run["details_url"] != links["MLflow run"]  # the MLflow link is in the summary; details: the run page


async def test_hostile_history_rows_in_s3_are_shown_as_text(bed: Bed) -> None:
    """Defence in depth (the history lives in the bot's bucket, which workloads cannot write): a forged
    history row renders as text, its link dropped."""
    setup_repo(bed)
    head = open_pr(bed, {"train.py": "print('pr')\n"})
    forged = [{"run": "x", "sha": "`evil`", "conclusion": FAKE_APPROVAL, "headline": "<img src=x> @acme/everyone",
               "at": "# now", "check": "javascript:alert(1)", "trigger": "[x](http://evil)"}]
    await bed.deps.artifacts.put_json(regression.history_key(REPO, 2), forged)
    await approve(bed)
    await finish(bed, job_for(bed, head), {"accuracy": 0.9, "loss": 0.2})
    await wait_for(lambda: completed(bed, head), what="regression report")
    await bed.settle()
    [note] = sticky(bed)
    rendered_ok(note["body"])
    assert "<img src=x> @\u200bacme/everyone" in markdown.text(note["body"])


async def test_a_federated_model_file_named_like_html_is_a_link_that_reads_as_its_name(bed: Bed) -> None:
    server = await start_run(bed, "/train rounds=1 clients=1")
    rounds = [{"round": 1, "metrics": {FAKE_APPROVAL: 0.5, "loss": "<b>bold</b>"}}]
    write_output(bed, server, rounds=rounds, final={FAKE_APPROVAL: 1, "@acme/everyone": 2},
                 model={"<img src=x>": b"weights", "ok.npz": b"ok"})
    [client] = [j for j in bed.kube.list("jobs", NAMESPACE, labels={"flops.dev/kind": "federated-client"})]
    bed.kube.succeed_job(NAMESPACE, client["metadata"]["name"])
    bed.kube.succeed_job(NAMESPACE, server["metadata"]["name"])
    check = await report_of(bed, head_of(bed))
    [note] = [c for c in bed.github.comments_on(FL_REPO, 7) if "<!-- flops:federated -->" in c["body"]]
    for body in (check["output"]["summary"], note["body"]):
        rendered_ok(body)
        assert "<b>" not in markdown.html(body)
        assert set(markdown.links(body)) == {"<img src=x>", "ok.npz"}
        assert markdown.cells(body, "Rounds")[0] == ["round", FAKE_APPROVAL.replace("@", "@\u200b"), "loss"]
    assert json.dumps(check["output"]["title"])  # a title is plain text on GitHub: nothing to check there


async def test_a_100k_character_log_fits_githubs_limit_with_a_note(bed: Bed) -> None:
    setup_repo(bed)
    head = open_pr(bed, {"train.py": "raise SystemExit(3)\n"})
    await approve(bed)
    log = "start\n" + "x" * 100_000 + " @acme ``` <img src=x>\nthe last line\n"
    bed.kube.fail_job(NAMESPACE, job_for(bed, head)["metadata"]["name"], logs=log, exit_code=3)
    run = await wait_for(lambda: completed(bed, head), what="failure report")
    body = run["output"]["text"]
    assert len(body) <= MAX_TEXT and "truncated" in markdown.text(body)
    assert "the last line" in body
    html = markdown.html(body)
    assert "<img" not in html and re.findall(r"<(\w+)", html) == ["p", "code", "p", "pre", "code"]
