"""#25 part 5: `WEBHOOK_PROXY_URL`, deliveries relayed through a smee.io-style channel (Server-Sent
Events) into the same intake as `POST /webhook`. Against a smee.io stand-in (tests/emulators/smee.py)
over real HTTP: GitHub's signed delivery is POSTed to the channel, smee relays headers and parsed
body, the bot re-serialises it as smee-client does and verifies GitHub's signature on that."""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.platform.settings import SettingsError, from_env
from bot.service.webhook_proxy import Parser, js_stringify, relayed
from tests.conftest import INSTALLATION, NAMESPACE, PAYLOADS, SECRET, Bed, BedFactory, push_payload, sign, wait_for
from tests.emulators.github import GitHubEmulator
from tests.emulators.kube import KubeEmulator
from tests.emulators.s3 import S3Server
from tests.emulators.smee import SmeeChannel
from tests.serving import serving
from tests.test_builds import FILES, REPO, by_image, push


@pytest.fixture
async def smee() -> AsyncIterator[SmeeChannel]:
    channel = SmeeChannel()
    await channel.start()
    yield channel
    await channel.stop()


def github_bytes(data: dict[str, Any]) -> bytes:
    """A payload as GitHub sends it: compact JSON, UTF-8, non-ASCII unescaped."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


async def relay(smee: SmeeChannel, event: str, data: dict[str, Any], *, secret: str | None = SECRET) -> str:
    """GitHub's POST of a delivery to the channel's URL; returns its delivery id."""
    body, delivery = github_bytes(data), str(uuid.uuid4())
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "Content-Type": "application/json",
               "User-Agent": "GitHub-Hookshot/test"}
    if secret is not None:
        headers["X-Hub-Signature-256"] = sign(body, secret)
    async with aiohttp.ClientSession() as session, session.post(smee.url, data=body, headers=headers) as response:
        assert response.status == 200
    return delivery


async def proxy_started(make_bed: BedFactory, smee: SmeeChannel) -> Bed:
    bed = await make_bed(WEBHOOK_PROXY_URL=smee.url)
    bed.github.add_installation(INSTALLATION, "Codertocat", [REPO])
    return bed


def proxied(bed: Bed, outcome: str) -> float:
    return bed.deps.metrics.value("flops_webhook_proxy_events_total", outcome=outcome)


async def proxy_bed(make_bed: BedFactory, smee: SmeeChannel) -> Bed:
    bed = await proxy_started(make_bed, smee)
    await wait_for(lambda: smee.readers, what="the bot reading the channel")
    return bed


async def test_a_relayed_signed_push_is_processed(make_bed: BedFactory, smee: SmeeChannel) -> None:
    bed = await proxy_bed(make_bed, smee)
    data = push(bed, {"server/app.py": "print('relayed ✓')\n"})
    data["head_commit"]["message"] = "naïve café – ünïcode\tand\u2028separators"  # survives the re-serialisation
    await relay(smee, "push", data)
    await wait_for(lambda: proxied(bed, "accepted"), what="the relayed delivery accepted")
    await bed.settle()
    assert set(by_image(bed)) == {"server"}
    runs = bed.github.check_runs_for(REPO, data["after"], "flops/build: server")
    assert [r["status"] for r in runs] == ["in_progress"]
    assert bed.deps.metrics.value("flops_webhook_deliveries_total", event="push", outcome="accepted") == 1
    assert bed.deps.metrics.value("flops_webhook_proxy_connected") == 1


async def test_forged_and_unsigned_relayed_deliveries_are_dropped_and_counted(make_bed: BedFactory,
                                                                              smee: SmeeChannel) -> None:
    bed = await proxy_bed(make_bed, smee)
    data = push(bed, {"server/app.py": "print('forged')\n"})
    await relay(smee, "push", data, secret="not-the-secret")
    await relay(smee, "push", data, secret=None)
    await smee.send_raw("data: {not json\n\n")  # neither is a delivery
    await wait_for(lambda: proxied(bed, "unauthorized") == 2 and proxied(bed, "malformed") == 1,
                   what="the forged and unsigned deliveries counted")
    await bed.settle()
    assert by_image(bed) == {} and bed.kube.list("jobs", NAMESPACE) == []
    assert bed.github.check_runs_for(REPO, data["after"]) == []
    assert bed.deps.metrics.value("flops_webhook_deliveries_total", event="unknown", outcome="unauthorized") == 2
    assert proxied(bed, "accepted") == 0


async def test_the_proxy_reconnects_after_the_stream_drops(make_bed: BedFactory, smee: SmeeChannel) -> None:
    bed = await proxy_bed(make_bed, smee)
    waits = len(bed.sleeps.calls)  # the proxy sits on the open stream: it sleeps no more until it ends
    smee.down()  # the stream ends and the next connections are refused: backoff, then back
    await wait_for(lambda: len(bed.sleeps.calls) >= waits + 4, what="refused reconnects")
    assert bed.deps.metrics.value("flops_webhook_proxy_connected") == 0
    smee.up()
    await wait_for(lambda: smee.connects >= 2 and smee.readers, what="reconnected")
    retry = smee.retry_ms / 1000  # type: ignore[operator]
    assert bed.sleeps.calls[waits:waits + 4] == [retry, retry, 2 * retry, 4 * retry]  # the server's retry: first
    assert max(bed.sleeps.calls[waits:]) <= bed.deps.policy.max_delay  # then doubling, capped
    assert smee.last_event_ids[-1] is not None  # the last id seen is sent back
    data = push(bed, {"server/app.py": "print('after reconnect')\n"})
    await relay(smee, "push", data)
    await wait_for(lambda: by_image(bed).get("server"), what="the build of the delivery after the reconnect")


async def test_a_down_channel_neither_blocks_start_up_nor_readiness(make_bed: BedFactory, smee: SmeeChannel) -> None:
    smee.down()
    bed = await proxy_started(make_bed, smee)
    await wait_for(lambda: len(bed.sleeps.calls) >= 2, what="reconnect attempts")
    async with bed.session.get(bed.url("/readyz")) as response:
        assert response.status == 200, await response.text()
    assert bed.deps.metrics.value("flops_webhook_proxy_connected") == 0


def test_sse_parser_reads_fields_as_the_standard_says() -> None:
    parser = Parser()
    lines = [": keep-alive", "retry: 2500", "id: 7", "event: ping", "data: {}", "", "data: a", "data:b", "",
             "id: 8", "", "data", ""]
    events = [e for e in map(parser.feed, lines) if e is not None]
    assert [(e.name, e.data, e.id) for e in events] == [("ping", "{}", "7"), ("message", "a\nb", "7"),
                                                        ("message", "", "8")]
    assert (parser.retry, parser.last_id) == (2.5, "8")


def test_relayed_message_becomes_the_request_smee_client_makes() -> None:
    body = {"a": 1.0, "b": [1.5, "é", "\u2028", "\x01"], "c": None, "d": True, "e": 10**20}
    message = {"host": "smee.io", "x-github-event": "push", "x-hub-signature-256": "sha256=00",
               "content-length": "999", "content-type": "application/x-www-form-urlencoded",
               "body": body, "query": {"x": "1"}, "timestamp": 1764835200000}
    headers, raw = relayed(json.dumps(message))
    assert raw == '{"a":1,"b":[1.5,"é","\u2028","\\u0001"],"c":null,"d":true,"e":100000000000000000000}'.encode()
    assert raw == js_stringify(body)
    assert headers["X-GitHub-Event"] == "push" and headers["Content-Type"] == "application/json"
    assert "host" not in headers and "content-length" not in headers and "timestamp" not in headers


async def test_serve_with_webhook_proxy_url_processes_relayed_deliveries(
        tmp_path: Path, github: GitHubEmulator, kube: KubeEmulator, s3: S3Server, smee: SmeeChannel) -> None:
    """`python -m bot serve` as a developer runs it: WEBHOOK_PROXY_URL set, no public URL."""
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    github.add_repo(REPO, default_branch="master")
    github.commit(REPO, "master", FILES)
    async with serving(tmp_path, github, kube, s3, WEBHOOK_PROXY_URL=smee.url) as served:
        await wait_for(lambda: smee.readers, timeout=30, what="serve reading the channel")
        await relay(smee, "push", push_payload(github, REPO, {"server/app.py": "print('forged')\n"}), secret="x")
        smee.drop()  # the stream ends: serve reconnects by itself
        await wait_for(lambda: smee.connects >= 2 and smee.readers, timeout=30, what="serve reconnected")
        data = push_payload(github, REPO, {"server/app.py": "print('via smee')\n"})
        await relay(smee, "push", data)
        await wait_for(lambda: kube.list("jobs", NAMESPACE), timeout=30, what="the relayed push's build Job")
        assert [j["metadata"]["annotations"]["flops.dev/sha"] for j in kube.list("jobs", NAMESPACE)] == [data["after"]]
        runs = github.check_runs_for(REPO, data["after"], "flops/build: server")
        assert [r["status"] for r in runs] == ["in_progress"]
        async with aiohttp.ClientSession() as session, session.get(served.url + "/metrics") as response:
            metrics = await response.text()
        assert 'flops_webhook_proxy_events_total{outcome="unauthorized"} 1.0' in metrics
        assert 'flops_webhook_proxy_events_total{outcome="accepted"} 1.0' in metrics
    assert smee.channel not in served.log.read_text()  # the channel's name is its secret: never logged


def test_webhook_proxy_url_must_be_an_http_url(env: dict[str, str]) -> None:
    assert from_env(env).webhook_proxy_url is None
    assert from_env({**env, "WEBHOOK_PROXY_URL": " https://smee.io/abc "}).webhook_proxy_url == "https://smee.io/abc"
    with pytest.raises(SettingsError) as bad:
        from_env({**env, "WEBHOOK_PROXY_URL": "smee.io/abc"})
    assert bad.value.problems == ["WEBHOOK_PROXY_URL must be an http(s) URL such as https://smee.io/<channel>"]
    assert "smee.io/abc" not in repr(from_env({**env, "WEBHOOK_PROXY_URL": "https://smee.io/abc"}))


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node (JavaScript's own JSON.stringify)")
def test_js_stringify_gives_javascripts_bytes_for_every_recorded_payload() -> None:
    """The bytes smee-client forwards are `JSON.stringify(JSON.parse(data))`: node says what they are."""
    tricky = {"s": "é ✓ 😀 \u2028 \u2029 \x00\x1f\x7f \" \\ / <>&", "f": [1.0, -0.0, 0.1, 1.5e300, 2.5e-7, 1e21],
              "i": [0, -1, 2**53, 2**53 + 1, 10**30, -(10**22)], "n": None, "b": [True, False], "o": {}, "a": [],
              "lone": "\ud800x\udfff", "pair": "\ud83d\ude00", "keys": {"b": 1, "10": 2, "2": 3, "01": 4, "-1": 5},
              "small": [1e-6, 1e-7, 0.000123, 123456789.125, 5e-324, 1.7976931348623157e308]}
    samples = [json.loads(path.read_text()) for path in sorted(PAYLOADS.glob("*.json"))] + [tricky]
    for sample in samples:
        text = json.dumps(sample)
        node = subprocess.run(["node", "-e", "process.stdout.write(JSON.stringify(JSON.parse(require('fs')"
                               ".readFileSync(0, 'utf8'))))"], input=text.encode(), capture_output=True, check=True)
        assert js_stringify(json.loads(text)) == node.stdout


async def test_a_large_relayed_delivery_arrives_whole(make_bed: BedFactory, smee: SmeeChannel) -> None:
    """One SSE line of ~8 MB (smee sends each delivery as one `data:` line), read in chunks."""
    bed = await proxy_bed(make_bed, smee)
    data = push(bed, {"server/app.py": "print('big')\n"})
    data["head_commit"]["message"] = "x" * (8 << 20)
    await relay(smee, "push", data)
    await wait_for(lambda: proxied(bed, "accepted"), timeout=20, what="the large relayed delivery accepted")
    await bed.settle()
    assert set(by_image(bed)) == {"server"}


async def test_shutdown_stops_reading_the_channel_before_it_drains(make_bed: BedFactory, smee: SmeeChannel) -> None:
    """smee.io answered GitHub 2xx for whatever it relays: a delivery read during the drain would be
    refused (`shutting down`) and lost, so a stopping bot leaves the channel first, then drains."""
    bed = await proxy_bed(make_bed, smee)
    held = bed.github.hold_next("GET", r"/contents/\.github/flops\.yml$")  # the push in flight at the stop
    data = push(bed, {"server/app.py": "print('in flight at the stop')\n"})
    await relay(smee, "push", data)
    await wait_for(lambda: held.arrived, what="the push being processed")
    stopping = asyncio.create_task(bed.server.close())
    await wait_for(lambda: smee.readers == 0, what="the channel left while the drain waits")
    assert not stopping.done()  # still draining the delivery in flight
    held.release.set()
    await asyncio.wait_for(stopping, 20)
    assert set(by_image(bed)) == {"server"}  # the delivery in flight was processed to the end
    assert proxied(bed, "unavailable") == 0  # nothing was read only to be refused
