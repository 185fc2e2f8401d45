"""Webhook intake, App auth, retries, health/readiness/metrics: the foundation, over real HTTP."""
from __future__ import annotations

import time
import uuid

import gidgethub
import pytest

from tests.conftest import INSTALLATION, SECRET, Bed, payload, wait_for

REPO = "Codertocat/Hello-World"


def push_to(bed: Bed, files: dict[str, str] | None = None) -> dict:
    """A real push payload re-pointed at a fresh commit of the emulated repo."""
    bed.github.add_repo(REPO, default_branch="master") if REPO not in bed.github.repos else None
    sha = bed.github.commit(REPO, "master", files or {"README.md": "hello"})
    data = payload("push")
    data["after"] = sha
    data["head_commit"]["id"] = sha
    data["installation"]["id"] = INSTALLATION
    return data


def config_reads(bed: Bed) -> list:
    return bed.github.calls_to("GET", r"/repos/Codertocat/Hello-World/contents/\.github/flops\.yml")


async def test_signed_delivery_is_acknowledged_then_processed(bed: Bed) -> None:
    response = await bed.deliver("push", push_to(bed))
    assert response.status == 202
    await bed.settle()
    assert len(config_reads(bed)) == 1


async def test_forged_and_unsigned_deliveries_are_rejected_before_parsing(bed: Bed) -> None:
    forged = await bed.deliver("push", push_to(bed), secret="not-the-secret")
    unsigned = await bed.deliver("push", push_to(bed), secret=None)
    garbage = await bed.deliver("push", b"{not json", secret="wrong")
    assert (forged.status, unsigned.status, garbage.status) == (401, 401, 401)
    await bed.settle()
    assert config_reads(bed) == []


async def test_malformed_signed_body_is_400(bed: Bed) -> None:
    response = await bed.deliver("push", b"{not json")
    assert response.status == 400
    not_object = await bed.deliver("push", b"[1, 2]")
    assert not_object.status == 400


async def test_signed_bodies_no_parser_can_take_are_400_and_the_bot_goes_on(bed: Bed) -> None:
    """Nesting 100,000 deep (json.loads raised RecursionError: a 500) and bytes that are not UTF-8."""
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"ref": "\xff\xfe"}', b'{"a": "\xc3\x28"}'):
        response = await bed.deliver("push", body)
        assert response.status == 400, body[:20]
        assert (await response.json())["message"].startswith("malformed delivery: body is not JSON")
    assert (await bed.deliver("push", push_to(bed))).status == 202


async def test_unknown_event_is_ignored_with_202(bed: Bed) -> None:
    response = await bed.deliver("star", {"action": "created", "repository": {"full_name": REPO}})
    assert response.status == 202
    assert (await response.json())["message"] == "ignored"


async def test_redelivery_is_acknowledged_not_rerun(bed: Bed) -> None:
    data = push_to(bed)
    delivery = str(uuid.uuid4())
    first = await bed.deliver("push", data, delivery=delivery)
    second = await bed.deliver("push", data, delivery=delivery)
    assert (first.status, second.status) == (202, 200)
    await bed.settle()
    assert len(config_reads(bed)) == 1


async def test_rotated_secrets_are_all_accepted(make_bed, github) -> None:
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    bed = await make_bed(GITHUB_WEBHOOK_SECRET=f"old-secret, {SECRET}")
    new = await bed.deliver("push", push_to(bed), secret=SECRET)
    old = await bed.deliver("push", push_to(bed), secret="old-secret")
    other = await bed.deliver("push", push_to(bed), secret="another")
    assert (new.status, old.status, other.status) == (202, 202, 401)


async def test_installation_token_is_cached_across_events(bed: Bed) -> None:
    for _ in range(3):
        await bed.deliver("push", push_to(bed))
    await bed.settle()
    assert len(config_reads(bed)) == 3
    assert len(bed.github.calls_to("POST", rf"/app/installations/{INSTALLATION}/access_tokens")) == 1


async def test_a_reinstalled_app_is_found_under_its_new_installation(bed: Bed) -> None:
    app = bed.deps.github
    bed.github.add_installation(90, "acme", ["acme/flops-config"])
    assert await app.installation_of("acme/flops-config") == 90
    await app.installation_token(90)
    del bed.github.installations[90]  # uninstalled ...
    bed.github.add_installation(91, "acme", ["acme/flops-config"])  # ... and installed again
    with pytest.raises(gidgethub.BadRequest):  # its cached token is refused, a new one cannot be had
        await app.installation_token(90, refresh=True)
    assert await app.installation_of("acme/flops-config") == 91


async def test_token_close_to_expiry_is_renewed(bed: Bed) -> None:
    bed.github.token_ttl = 120  # inside the renewal margin: every use needs a fresh token
    for _ in range(2):
        await bed.deliver("push", push_to(bed))
        await bed.settle()
    assert len(bed.github.calls_to("POST", rf"/app/installations/{INSTALLATION}/access_tokens")) == 2


async def test_revoked_token_is_replaced_and_the_call_retried(bed: Bed) -> None:
    await bed.deliver("push", push_to(bed))
    await bed.settle()
    bed.github.expire_tokens()
    await bed.deliver("push", push_to(bed))
    await bed.settle()
    statuses = [c.status for c in config_reads(bed)]
    assert statuses[-2:] == [401, 404]  # rejected once, then answered (no flops.yml: 404)
    assert len(bed.github.calls_to("POST", rf"/app/installations/{INSTALLATION}/access_tokens")) == 2


async def test_server_errors_are_retried_with_backoff(bed: Bed) -> None:
    bed.github.fail_next("GET", r"/contents/\.github/flops\.yml", 502, times=2)
    await bed.deliver("push", push_to(bed))
    await bed.settle()
    assert [c.status for c in config_reads(bed)] == [502, 502, 404]
    assert len(bed.sleeps.calls) == 2 and bed.sleeps.calls[1] > bed.sleeps.calls[0] * 0.5


async def test_primary_rate_limit_waits_until_reset(bed: Bed) -> None:
    reset = int(time.time()) + 30
    bed.github.fail_next("GET", r"/contents/\.github/flops\.yml", 403,
                         headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
                         body={"message": "API rate limit exceeded"})
    await bed.deliver("push", push_to(bed))
    await bed.settle()
    assert [c.status for c in config_reads(bed)] == [403, 404]
    assert 25 <= bed.sleeps.calls[0] <= 32


async def test_secondary_rate_limit_honours_retry_after(bed: Bed) -> None:
    bed.github.fail_next("GET", r"/contents/\.github/flops\.yml", 403, headers={"Retry-After": "7"},
                         body={"message": "You have exceeded a secondary rate limit"})
    await bed.deliver("push", push_to(bed))
    await bed.settle()
    assert bed.sleeps.calls == [7.0]
    assert [c.status for c in config_reads(bed)] == [403, 404]


async def test_invalid_config_fails_the_config_check_naming_the_key(bed: Bed) -> None:
    data = push_to(bed, {".github/flops.yml": "registry: harbor.example.com/flops\nimages:\n  - name: server\n"
                                               "    dockerfil: Dockerfile.server\n"})
    await bed.deliver("push", data)
    await bed.settle()
    [run] = bed.github.check_runs_for(REPO, data["after"], "flops/config")
    assert run["conclusion"] == "failure"
    assert "images[0].dockerfil" in run["output"]["summary"]
    assert "images[0].dockerfile" in run["output"]["summary"]


async def test_health_and_readiness(bed: Bed) -> None:
    async with bed.session.get(bed.url("/healthz")) as health:
        assert health.status == 200
    ready = await wait_for(lambda: _ready(bed), what="readiness")
    assert ready == {"github": "ok", "kubernetes": "ok", "s3": "ok"}


async def _ready(bed: Bed) -> dict | None:
    async with bed.session.get(bed.url("/readyz")) as response:
        body = await response.json()
        return body["checks"] if response.status == 200 else None


async def test_readiness_fails_while_kubernetes_is_down_and_health_stays_up(make_bed, kube) -> None:
    bed = await make_bed()
    kube.down = True
    async with bed.session.get(bed.url("/readyz")) as response:
        body = await response.json()
        assert response.status == 503
        assert body["checks"]["kubernetes"].startswith("error")
    async with bed.session.get(bed.url("/healthz")) as health:
        assert health.status == 200


async def test_readiness_fails_while_s3_is_unreachable_and_the_bot_stays_up(make_bed, github) -> None:
    from tests.emulators.s3 import free_port

    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    bed = await make_bed(MINIO_ENDPOINT=f"127.0.0.1:{free_port()}")  # configured, nothing listens
    async with bed.session.get(bed.url("/readyz")) as response:
        body = await response.json()
    assert response.status == 503
    assert body["checks"]["s3"].startswith("error") and body["checks"]["kubernetes"] == "ok"
    assert (await bed.deliver("push", push_to(bed))).status == 202  # still taking deliveries
    async with bed.session.get(bed.url("/healthz")) as health:
        assert health.status == 200


async def test_unreachable_github_is_retried_then_reported_as_such(make_bed, github) -> None:
    from bot.platform.retry import RetryPolicy
    from tests.emulators.s3 import free_port

    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    bed = await make_bed(GITHUB_API_URL=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    async with bed.session.get(bed.url("/readyz")) as response:
        body = await response.json()
    assert response.status == 503
    assert "GitHub unreachable" in body["checks"]["github"]
    attempts = RetryPolicy().attempts
    assert len(bed.sleeps.calls) == attempts - 1  # backed off between tries, then gave up
    bed.sleeps.calls.clear()
    await bed.deliver("push", push_to(bed))
    await bed.settle()
    assert bed.deps.metrics.value("flops_webhook_deliveries_total", event="push", outcome="failed") == 1
    assert len(bed.sleeps.calls) >= attempts - 1


async def test_readiness_fails_when_github_rejects_the_app_key(make_bed, github, tmp_path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # a valid key, but not the App's
    other = tmp_path / "other.pem"
    other.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    bed = await make_bed(GITHUB_PRIVATE_KEY_PATH=str(other))
    async with bed.session.get(bed.url("/readyz")) as response:
        body = await response.json()
    assert response.status == 503
    assert body["checks"]["github"].startswith("error") and body["checks"]["s3"] == "ok"


async def test_metrics_count_deliveries_and_github_calls(bed: Bed) -> None:
    await bed.deliver("push", push_to(bed))
    await bed.deliver("push", push_to(bed), secret="forged")
    await bed.settle()
    async with bed.session.get(bed.url("/metrics")) as response:
        text = await response.text()
    assert 'flops_webhook_deliveries_total{event="push",outcome="accepted"} 1' in text
    assert 'flops_webhook_deliveries_total{event="unknown",outcome="unauthorized"} 1' in text
    assert 'flops_webhook_deliveries_total{event="push",outcome="processed"} 1' in text
    assert 'flops_event_processing_seconds_count{event="push"} 1' in text
    assert 'flops_github_api_calls_total{method="GET",status="404"} 1' in text
    assert "flops_github_rate_limit_remaining " in text


async def test_metrics_speak_openmetrics_to_a_scraper_that_asks(bed: Bed) -> None:
    await bed.deliver("push", push_to(bed))
    await bed.settle()
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    async with bed.session.get(bed.url("/metrics"), headers={"Accept": accept}) as response:
        text = await response.text()
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n")
    assert 'flops_webhook_deliveries_total{event="push",outcome="accepted"} 1.0' in text
    assert 'flops_webhook_deliveries_created{event="push",outcome="accepted"}' in text
    async with bed.session.get(bed.url("/metrics")) as response:
        assert response.headers["Content-Type"].startswith("text/plain")


async def test_unsigned_requests_cannot_grow_metrics(bed: Bed) -> None:
    """The caller's X-GitHub-Event never becomes a label: 300 unsigned requests with made-up event
    names add no series, and a signed event the App does not subscribe to is counted as `other`."""
    async with bed.session.get(bed.url("/metrics")) as response:
        before = await response.text()
    for i in range(300):
        response = await bed.deliver(f"made-up-{i}-" + "x" * 200, b"{}", secret="forged")
        assert response.status == 401
    await bed.deliver("star", {"action": "created"})
    async with bed.session.get(bed.url("/metrics")) as response:
        after = await response.text()
    assert "made-up" not in after and "star" not in after
    assert 'flops_webhook_deliveries_total{event="unknown",outcome="unauthorized"} 300.0' in after
    assert 'flops_webhook_deliveries_total{event="other",outcome="ignored"} 1.0' in after
    assert len(after) < len(before) + 2_000  # two new series, not three hundred
