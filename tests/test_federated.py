"""Federated training runs on the test bed: `/train` -> server Job + Service + N client Jobs ->
one `flops/federated` report. Over real HTTP: GitHub emulator, Kubernetes emulator, SeaweedFS."""
from __future__ import annotations

import io
import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import kubernetes_validate
import minio
import pytest

from tests import markdown
from tests.conftest import INSTALLATION, NAMESPACE, Bed, BedFactory, payload, push_payload, wait_for
from tests.fencing import assert_fenced
from tests.samples import TWO_IMAGES

REPO = "Codertocat/Hello-World"
WRITER = "ada-maintainer"
PR = 7
CONFIG = TWO_IMAGES + """\
federated:
  server: {image: server, port: 8080}
  client: {image: client}
  clients: 2
  rounds: 3
  max_clients: 4
  max_rounds: 5
  timeout: TIMEOUT
  on_push: ON_PUSH
  resources: {cpu: "1", memory: 1Gi}
"""
ROUNDS = [{"round": 1, "metrics": {"loss": 0.912, "accuracy": 0.613}},
          {"round": 2, "metrics": {"loss": 0.4137, "accuracy": 0.8421}}]
FINAL = {"loss": 0.4137, "accuracy": 0.8421}
MODEL = {"weights.npz": b"\x93NUMPY fake weights " + bytes(range(256)), "model.json": b'{"features": 8}'}


def config(timeout: str = "1h", on_push: bool = False) -> str:
    return CONFIG.replace("TIMEOUT", timeout).replace("ON_PUSH", "true" if on_push else "false")


def open_pr(bed: Bed, cfg: str | None = None) -> str:
    """A repository with the config on master and PR #7 from `feature`; returns the head sha."""
    bed.github.add_repo(REPO, default_branch="master")
    base = bed.github.commit(REPO, "master", {".github/flops.yml": cfg or config(), "Dockerfile.server": "FROM x\n",
                                              "Dockerfile.client": "FROM y\n", "fl/server.py": "print(1)\n"})
    head = bed.github.commit(REPO, "feature", {"fl/server.py": "print(2)\n"}, parents=[base])
    bed.github.add_pull(REPO, PR, head, base_branch="master", head_ref="feature")
    bed.github.set_permission(REPO, WRITER, "write")
    return head


async def comment(bed: Bed, body: str, user: str = WRITER) -> None:
    await bed.deliver("issue_comment", _comment_payload(bed, body, user))
    await bed.settle()


def _comment_payload(bed: Bed, body: str, user: str = WRITER) -> dict[str, Any]:
    """The recorded issue_comment.created payload, as GitHub sends it for a PR comment by `user`."""
    data = payload("issue_comment.created")
    data["issue"].update(number=PR, pull_request={"url": f"https://api.github.com/repos/{REPO}/pulls/{PR}"})
    written = bed.github.add_comment(REPO, PR, body, user=user)
    data["comment"].update(id=written["id"], body=body, html_url=written.get("html_url", ""))
    data["comment"]["user"].update(login=user, type="User")
    data["sender"]["login"] = user
    data["repository"].update(full_name=REPO, default_branch="master")
    data["installation"]["id"] = INSTALLATION
    return data


def jobs_of(bed: Bed, kind: str) -> list[dict[str, Any]]:
    return bed.kube.list("jobs", NAMESPACE, labels={"flops.dev/kind": kind})


def digest_of(image: str) -> str:
    return "sha256:" + (image.encode().hex() * 64)[:64]


async def succeed_builds(bed: Bed, sha: str, images: tuple[str, ...] = ("server", "client")) -> None:
    for job in jobs_of(bed, "build"):
        ann = job["metadata"]["annotations"]
        if ann["flops.dev/sha"] == sha and ann["flops.dev/image"] in images and not job.get("status", {}).get(
                "conditions"):
            bed.kube.succeed_job(NAMESPACE, job["metadata"]["name"], message=digest_of(ann["flops.dev/image"]))
    for image in images:
        await wait_for(lambda: _exists(bed, f"builds/{REPO}/{sha}/{image}.json"), what=f"{image} build record")
    await bed.settle()


def _exists(bed: Bed, key: str) -> bool:
    return any(o.object_name == key for o in bed.s3.client().list_objects(bed.settings.s3.bucket, prefix=key))


async def start_run(bed: Bed, body: str = "/train rounds=2 clients=3", cfg: str | None = None) -> dict[str, Any]:
    """`/train` on a fresh PR, its images built by the bot, the run launched: the server Job."""
    head = open_pr(bed, cfg)
    await comment(bed, body)
    await succeed_builds(bed, head)
    [server] = await wait_for(lambda: jobs_of(bed, "federated-server"), what="server Job")
    await wait_for(lambda: "flops.dev/check-run-id" in bed.kube.get("jobs", NAMESPACE, server["metadata"]["name"])
                   ["metadata"]["annotations"], what="check run id on the server Job")
    await bed.settle()
    return bed.kube.get("jobs", NAMESPACE, server["metadata"]["name"])


def run_objects(bed: Bed, run: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    clients = [j for j in jobs_of(bed, "federated-client") if j["metadata"]["labels"]["flops.dev/run"] == run]
    services = [s for s in bed.kube.list("services", NAMESPACE) if s["metadata"]["labels"].get("flops.dev/run") == run]
    return sorted(clients, key=lambda j: j["metadata"]["name"]), services


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def write_output(bed: Bed, server: dict[str, Any], rounds: list[dict[str, Any]] = ROUNDS,
                 final: dict[str, Any] = FINAL, model: dict[str, bytes] = MODEL,
                 client: minio.Minio | None = None) -> None:
    """What the server workload writes to S3 (FLOPS_OUTPUT), with `client`'s key (default: the test bed's)."""
    prefix = env_of(server)["FLOPS_OUTPUT"]
    client, bucket = client or bed.s3.client(), bed.settings.s3.runs_bucket
    if not client.bucket_exists(bucket):  # the operator creates it at install (README); the bot's /readyz too
        client.make_bucket(bucket)
    data = json.dumps({"rounds": rounds, "metrics": final}).encode()
    client.put_object(bucket, prefix + "metrics.json", io.BytesIO(data), len(data))
    for name, blob in model.items():
        client.put_object(bucket, prefix + "model/" + name, io.BytesIO(blob), len(blob))


async def report_of(bed: Bed, sha: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        runs = [r for r in bed.github.check_runs_for(REPO, sha, "flops/federated") if r["status"] == "completed"]
        return runs[0] if runs else None
    run = await wait_for(done, timeout=20, what="flops/federated report")
    await bed.settle()
    return run


def table(summary: str, heading: str) -> list[list[str]]:
    """The rows of the table under `### heading`, as GitHub renders them."""
    return markdown.cells(summary, heading)[1:]


def head_of(bed: Bed) -> str:
    return bed.github.pulls[(REPO, PR)]["head"]["sha"]


# --- run creation ---------------------------------------------------------------------------------

async def test_train_creates_a_valid_run_with_the_asked_rounds_and_clients(bed: Bed) -> None:
    server = await start_run(bed, "/train rounds=2 clients=3")
    run = server["metadata"]["name"]
    clients, services = run_objects(bed, run)
    assert len(clients) == 3 and len(services) == 1
    for obj in [server, *clients, *services]:
        for version in ("1.30.0", "1.37.0"):
            kubernetes_validate.validate(obj, version, strict=True)
        assert obj["metadata"]["labels"]["flops.dev/run"] == run
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "flops-bot"
    assert server["metadata"]["labels"]["flops.dev/kind"] == "federated-server"
    assert {c["metadata"]["labels"]["flops.dev/kind"] for c in clients} == {"federated-client"}
    await wait_for(lambda: bed.deps.metrics.value("flops_jobs_active", kind="federated-client", state="queued") == 3,
                   what="the clients counted as queued (no pod ready yet)")
    for owned in [*clients, *services]:
        [ref] = owned["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"]) == ("Job", run, server["metadata"]["uid"])
    [service] = services
    [port] = service["spec"]["ports"]
    assert port["port"] == 8080 and port["targetPort"] == 8080
    pod_labels = server["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert not any(service["spec"]["selector"].items() <= c["spec"]["template"]["metadata"]["labels"].items()
                   for c in clients)  # the Service reaches the server only
    head = head_of(bed)
    server_env = env_of(server)
    assert server_env["FL_SERVER_ADDRESS"] == f"{service['metadata']['name']}:8080"
    assert (server_env["FL_ROUNDS"], server_env["FL_NUM_CLIENTS"]) == ("2", "3")
    assert "FL_CLIENT_ID" not in server_env
    assert [p["containerPort"] for p in server["spec"]["template"]["spec"]["containers"][0]["ports"]] == [8080]
    assert sorted(env_of(c)["FL_CLIENT_ID"] for c in clients) == ["0", "1", "2"]
    for job in [server, *clients]:
        env = env_of(job)
        assert env["FL_SERVER_ADDRESS"] == server_env["FL_SERVER_ADDRESS"]
        assert (env["FLOPS_RUN_ID"], env["FLOPS_REPO"], env["FLOPS_SHA"], env["FLOPS_PR"]) == (run, REPO, head, str(PR))
        assert env["FLOPS_OUTPUT"] == f"runs/{REPO}/{run}/"
        assert env["FLOPS_S3_BUCKET"] == bed.settings.s3.runs_bucket
        assert env["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": bed.settings.s3_secret,
                                                                 "key": "AWS_SECRET_ACCESS_KEY"}}
        assert bed.settings.s3.secret_key not in json.dumps(job)
        pod = job["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
        assert_fenced(job)
        assert pod["containers"][0]["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    images = {c["spec"]["template"]["spec"]["containers"][0]["image"] for c in clients}
    assert images == {f"harbor.example.com/flops-pr/client:pr-{PR}-{head[:7]}@{digest_of('client')}"}
    assert server["spec"]["template"]["spec"]["containers"][0]["image"] == \
        f"harbor.example.com/flops-pr/server:pr-{PR}-{head[:7]}@{digest_of('server')}"
    [check] = bed.github.check_runs_for(REPO, head, "flops/federated")
    assert check["status"] == "in_progress" and check["external_id"] == run
    assert server["metadata"]["annotations"]["flops.dev/check-run-id"] == str(check["id"])
    reply = [c["body"] for c in bed.github.comments_on(REPO, PR) if "/train" in c["body"]][-1]
    assert "2 rounds, 3 clients" in reply


def run_policies(bed: Bed, run: str) -> list[dict[str, Any]]:
    return [p for p in bed.kube.list("networkpolicies", NAMESPACE) if p["metadata"]["labels"].get("flops.dev/run") == run]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}
    return bool(selector["matchLabels"].items() <= labels.items())


async def test_a_run_opens_its_server_to_its_own_clients_only(bed: Bed) -> None:
    server = await start_run(bed, "/train rounds=2 clients=3")
    run = server["metadata"]["name"]
    clients, [service] = run_objects(bed, run)
    [policy] = run_policies(bed, run)
    for version in ("1.30.0", "1.37.0"):
        kubernetes_validate.validate(policy, version, strict=True)
    [ref] = policy["metadata"]["ownerReferences"]  # garbage-collected with the server Job
    assert (ref["kind"], ref["name"], ref["uid"]) == ("Job", run, server["metadata"]["uid"])
    pod = {"server": server["spec"]["template"]["metadata"]["labels"],
           "clients": [c["spec"]["template"]["metadata"]["labels"] for c in clients]}
    other_run = {**pod["clients"][0], "flops.dev/run": "flops-fl-pr8-0000000-00000000"}
    others = [other_run, {**pod["server"], "flops.dev/run": other_run["flops.dev/run"]},
              {"app.kubernetes.io/name": "flops-bot"},  # the bot's own pod
              {"app.kubernetes.io/managed-by": "flops-bot", "flops.dev/kind": "regression", "flops.dev/run": "r"}]
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert all(selects(spec["podSelector"], labels) for labels in [pod["server"], *pod["clients"]])
    assert not any(selects(spec["podSelector"], labels) for labels in others)  # exactly this run's pods
    [ingress], [egress] = spec["ingress"], spec["egress"]
    port = service["spec"]["ports"][0]["targetPort"]
    assert ingress["ports"] == egress["ports"] == [{"protocol": "TCP", "port": port}]
    [source], [destination] = ingress["from"], egress["to"]
    assert set(source) == {"podSelector"} and set(destination) == {"podSelector"}  # this namespace only
    assert [selects(source["podSelector"], labels) for labels in [pod["server"], *pod["clients"], *others]] == \
        [False, True, True, True, False, False, False, False]  # from this run's clients, nothing else
    assert [selects(destination["podSelector"], labels) for labels in [pod["server"], *pod["clients"], *others]] == \
        [True, False, False, False, False, False, False, False]  # to this run's server, nothing else
    bed.kube.succeed_job(NAMESPACE, run)
    await report_of(bed, head_of(bed))
    assert run_policies(bed, run) == []  # gone with the run, like its Service


async def test_train_without_arguments_uses_the_config_defaults(bed: Bed) -> None:
    server = await start_run(bed, "/train")
    env = env_of(server)
    assert (env["FL_ROUNDS"], env["FL_NUM_CLIENTS"]) == ("3", "2")
    assert len(run_objects(bed, server["metadata"]["name"])[0]) == 2


async def test_train_beyond_the_configured_maximum_is_refused(bed: Bed) -> None:
    open_pr(bed)
    await comment(bed, "/train rounds=2 clients=5")
    assert jobs_of(bed, "federated-server") == [] and jobs_of(bed, "build") == []
    reply = bed.github.comments_on(REPO, PR)[-1]["body"]
    assert "clients" in reply and "4" in reply


async def test_deleting_the_server_job_deletes_the_whole_run(bed: Bed) -> None:
    server = await start_run(bed)
    run = server["metadata"]["name"]
    bed.kube.start_job(NAMESPACE, run)
    bed.deps.kube.batch.delete_namespaced_job(run, NAMESPACE, propagation_policy="Background")
    assert run_objects(bed, run) == ([], []) and run_policies(bed, run) == []
    assert bed.kube.list("pods", NAMESPACE, labels={"job-name": run}) == []
    check = await report_of(bed, head_of(bed))  # the check does not stay in progress
    assert check["conclusion"] == "cancelled"


async def test_existing_builds_of_the_head_are_used_without_building_again(bed: Bed) -> None:
    head = open_pr(bed)
    await comment(bed, "/build")
    await succeed_builds(bed, head)
    await comment(bed, "/train clients=2")
    [server] = jobs_of(bed, "federated-server")
    assert f"federated run `{server['metadata']['name']}` started" in bed.github.comments_on(REPO, PR)[-1]["body"]
    assert len(jobs_of(bed, "build")) == 2  # the two of /build, none more
    assert env_of(server)["FL_NUM_CLIENTS"] == "2"
    assert digest_of("server") in server["spec"]["template"]["spec"]["containers"][0]["image"]


async def test_train_builds_the_images_first_and_runs_once_both_are_built(bed: Bed) -> None:
    head = open_pr(bed)
    await comment(bed, "/train rounds=2 clients=3")
    assert jobs_of(bed, "federated-server") == []
    builds = {j["metadata"]["annotations"]["flops.dev/image"]: j for j in jobs_of(bed, "build")}
    assert set(builds) == {"server", "client"}
    assert all(j["metadata"]["annotations"]["flops.dev/tag"] == f"pr-{PR}-{head[:7]}" for j in builds.values())
    assert "first" in bed.github.comments_on(REPO, PR)[-1]["body"]
    await comment(bed, "/train rounds=2 clients=3")  # asked again while building: no second pair of builds
    assert len(jobs_of(bed, "build")) == 2
    await succeed_builds(bed, head, ("server",))
    assert jobs_of(bed, "federated-server") == []  # the client image is not built yet
    await succeed_builds(bed, head, ("client",))
    [server] = await wait_for(lambda: jobs_of(bed, "federated-server"), what="server Job")
    assert env_of(server)["FL_NUM_CLIENTS"] == "3"
    assert server["spec"]["template"]["spec"]["containers"][0]["image"].endswith("@" + digest_of("server"))
    assert not _exists(bed, f"pending/{REPO}/{head}/train.json")


async def test_a_run_waiting_on_a_failed_build_starts_after_retest_builds_it(bed: Bed) -> None:
    head = open_pr(bed)
    await comment(bed, "/train")
    failed = next(j for j in jobs_of(bed, "build") if j["metadata"]["annotations"]["flops.dev/image"] == "server")
    bed.kube.fail_job(NAMESPACE, failed["metadata"]["name"], logs="error: COPY failed\n")
    await succeed_builds(bed, head, ("client",))
    await wait_for(lambda: any(r["conclusion"] == "failure" for r in
                               bed.github.check_runs_for(REPO, head, "flops/build: server")), what="build failure")
    assert jobs_of(bed, "federated-server") == []
    await comment(bed, "/retest")
    await succeed_builds(bed, head, ("server",))
    [server] = await wait_for(lambda: jobs_of(bed, "federated-server"), what="the run, once the image built")
    assert server["spec"]["template"]["spec"]["containers"][0]["image"].endswith(digest_of("server"))


async def test_cancel_while_waiting_for_images_means_the_run_never_starts(bed: Bed) -> None:
    head = open_pr(bed)
    await comment(bed, "/train")
    await comment(bed, "/cancel train")
    assert "will not start" in bed.github.comments_on(REPO, PR)[-1]["body"]
    await succeed_builds(bed, head)
    assert jobs_of(bed, "federated-server") == []


# --- the report -----------------------------------------------------------------------------------

async def test_success_report_has_rounds_final_metrics_model_links_and_clients(bed: Bed) -> None:
    server = await start_run(bed)
    run = server["metadata"]["name"]
    clients, _ = run_objects(bed, run)
    write_output(bed, server)
    for job in clients[:2]:
        bed.kube.succeed_job(NAMESPACE, job["metadata"]["name"])
    bed.kube.start_job(NAMESPACE, clients[2]["metadata"]["name"])  # still running when the server ends
    bed.kube.succeed_job(NAMESPACE, run)
    check = await report_of(bed, head_of(bed))
    assert check["conclusion"] == "success"
    summary = check["output"]["summary"]
    rows = table(summary, "Rounds")
    names = markdown.cells(summary, "Rounds")[0][1:]
    assert [int(r[0]) for r in rows] == [r["round"] for r in ROUNDS]
    for row, written in zip(rows, ROUNDS):
        assert {n: float(v) for n, v in zip(names, row[1:])} == pytest.approx(written["metrics"], rel=1e-3)
    final = dict(re.findall(r"\*\*(\w+)\*\* ([0-9.]+)", summary.split("### Final metrics", 1)[1].split("###")[0]))
    assert {k: float(v) for k, v in final.items()} == pytest.approx(FINAL, rel=1e-3)
    links = markdown.links(summary)
    assert set(links) == set(MODEL)
    for name, url in links.items():
        async with bed.session.get(url) as response:
            assert response.status == 200 and await response.read() == MODEL[name]
    assert re.search(r"Links expire \d{4}-\d\d-\d\d \d\d:\d\d UTC \(7 days\)", summary)
    roster = {int(r[0]): r[2] for r in table(summary, "Clients")}
    assert roster == {0: "succeeded", 1: "succeeded", 2: "stopped (still running when the run ended)"}
    assert bed.kube.get("jobs", NAMESPACE, clients[2]["metadata"]["name"]) is None
    assert run_objects(bed, run)[1] == []  # the Service is gone with the run
    assert "2 rounds, 3 clients" in check["output"]["title"]
    sticky = [c for c in bed.github.comments_on(REPO, PR) if "<!-- flops:federated -->" in c["body"]]
    assert len(sticky) == 1 and "success" in sticky[0]["body"] and "### Rounds" in sticky[0]["body"]


async def test_a_report_retried_after_github_failed_shows_the_same_roster(bed: Bed) -> None:
    server = await start_run(bed, "/train clients=2")
    run = server["metadata"]["name"]
    clients, _ = run_objects(bed, run)
    write_output(bed, server)
    bed.kube.succeed_job(NAMESPACE, clients[0]["metadata"]["name"])
    bed.kube.start_job(NAMESPACE, clients[1]["metadata"]["name"])
    check_id = server["metadata"]["annotations"]["flops.dev/check-run-id"]
    bed.github.fail_next("PATCH", rf"/check-runs/{check_id}$", 502, times=5)  # every retry of the report fails
    bed.kube.succeed_job(NAMESPACE, run)
    await wait_for(lambda: len(bed.github.calls_to("PATCH", rf"/check-runs/{check_id}$")) >= 5, what="attempts")
    await bed.settle()
    assert bed.kube.get("jobs", NAMESPACE, clients[1]["metadata"]["name"]) is not None  # not stopped before reporting
    bed.kube.expire_watches()  # the tracker re-lists and reports again
    check = await report_of(bed, head_of(bed))
    assert check["conclusion"] == "success"
    roster = {int(r[0]): r[2] for r in table(check["output"]["summary"], "Clients")}
    assert roster == {0: "succeeded", 1: "stopped (still running when the run ended)"}
    await wait_for(lambda: bed.kube.get("jobs", NAMESPACE, clients[1]["metadata"]["name"]) is None,
                   what="the running client deleted after the report")


async def test_a_failed_client_is_reported_by_name(bed: Bed) -> None:
    server = await start_run(bed)
    run = server["metadata"]["name"]
    clients, _ = run_objects(bed, run)
    write_output(bed, server)
    bed.kube.succeed_job(NAMESPACE, clients[0]["metadata"]["name"])
    bed.kube.fail_job(NAMESPACE, clients[1]["metadata"]["name"], exit_code=3, logs="Traceback: boom\n")
    bed.kube.succeed_job(NAMESPACE, clients[2]["metadata"]["name"])
    bed.kube.succeed_job(NAMESPACE, run)
    check = await report_of(bed, head_of(bed))
    assert check["conclusion"] == "failure"
    assert check["output"]["title"] == "client 1 failed"
    summary = check["output"]["summary"]
    assert clients[1]["metadata"]["name"] in summary.split("### Rounds")[0]
    roster = {int(r[0]): (r[1].strip("`"), r[2]) for r in table(summary, "Clients")}
    assert roster[1] == (clients[1]["metadata"]["name"], "failed: container client exited with code 3 (Error)")  # as rendered
    assert roster[0][1] == roster[2][1] == "succeeded"
    assert len(table(summary, "Rounds")) == len(ROUNDS)  # what the server did write is still shown


async def test_retest_of_a_failed_run_keeps_its_rounds_and_clients(bed: Bed) -> None:
    server = await start_run(bed, "/train rounds=2 clients=3")  # the config's defaults differ
    bed.kube.fail_job(NAMESPACE, server["metadata"]["name"], exit_code=1, logs="diverged\n")
    check = await report_of(bed, head_of(bed))
    assert check["conclusion"] == "failure"
    await comment(bed, "/retest")
    [again] = [j for j in jobs_of(bed, "federated-server") if j["metadata"]["name"] != server["metadata"]["name"]]
    assert (env_of(again)["FL_ROUNDS"], env_of(again)["FL_NUM_CLIENTS"]) == ("2", "3")


async def test_a_client_that_cannot_pull_its_image_is_a_failed_client(bed: Bed) -> None:
    server = await start_run(bed, "/train clients=2")
    run = server["metadata"]["name"]
    clients, _ = run_objects(bed, run)
    write_output(bed, server)
    bed.kube.succeed_job(NAMESPACE, clients[0]["metadata"]["name"])
    bed.kube.set_pod_waiting(NAMESPACE, clients[1]["metadata"]["name"], "ImagePullBackOff",
                             'Back-off pulling image "harbor.example.com/flops/client": 401 Unauthorized')
    bed.kube.succeed_job(NAMESPACE, run)  # the server gave up waiting for client 1 and finished
    check = await report_of(bed, head_of(bed))
    assert check["conclusion"] == "failure" and check["output"]["title"] == "client 1 failed"
    roster = {int(r[0]): r[2] for r in table(check["output"]["summary"], "Clients")}
    assert roster[1].startswith("failed: never started (ImagePullBackOff: Back-off pulling image")
    await wait_for(lambda: bed.kube.get("jobs", NAMESPACE, clients[1]["metadata"]["name"]) is None,
                   what="the stuck client deleted")


async def test_a_lost_client_does_not_hang_the_run(bed: Bed) -> None:
    server = await start_run(bed, "/train rounds=2 clients=2")
    run = server["metadata"]["name"]
    clients, _ = run_objects(bed, run)
    bed.kube.succeed_job(NAMESPACE, clients[0]["metadata"]["name"])
    bed.deps.kube.batch.delete_namespaced_job(clients[1]["metadata"]["name"], NAMESPACE)  # its node was lost
    bed.kube.fail_job(NAMESPACE, run, exit_code=2, logs="round 1: waiting for clients\nround 1: client 1 did not "
                                                         "report within 600s; giving up\n")
    check = await report_of(bed, head_of(bed))
    assert check["conclusion"] == "failure"
    assert "exited with code 2" in check["output"]["title"]
    assert "client 1 did not report" in check["output"]["text"]
    roster = {int(r[0]): r[2] for r in table(check["output"]["summary"], "Clients")}
    assert roster == {0: "succeeded", 1: "missing: its Job was deleted or never created"}


async def test_a_server_that_writes_no_metrics_fails_the_run(bed: Bed) -> None:
    server = await start_run(bed, "/train clients=1")
    bed.kube.succeed_job(NAMESPACE, run_objects(bed, server["metadata"]["name"])[0][0]["metadata"]["name"])
    bed.kube.succeed_job(NAMESPACE, server["metadata"]["name"], logs="done\n")
    check = await report_of(bed, head_of(bed))
    assert check["conclusion"] == "failure"
    assert "metrics.json" in check["output"]["summary"] and "rounds" in check["output"]["summary"]


async def test_a_run_past_its_timeout_is_stopped_and_reported_with_the_server_log(bed: Bed) -> None:
    server = await start_run(bed, "/train rounds=2 clients=2", cfg=config(timeout="3s"))
    run = server["metadata"]["name"]
    bed.kube.start_job(NAMESPACE, run)
    [pod] = bed.kube.list("pods", NAMESPACE, labels={"job-name": run})
    bed.kube.set_logs(NAMESPACE, pod["metadata"]["name"], "server",
                      "".join(f"round 1: waiting for clients ({i})\n" for i in range(60)))
    write_output(bed, server, rounds=ROUNDS[:1], final={}, model={})
    check = await report_of(bed, head_of(bed))
    assert check["conclusion"] == "timed_out"
    assert "timed out after 3s" in check["output"]["title"]
    assert "waiting for clients (59)" in check["output"]["text"] and "(5)\n" not in check["output"]["text"]
    assert len(table(check["output"]["summary"], "Rounds")) == 1  # progress so far
    await wait_for(lambda: bed.kube.get("jobs", NAMESPACE, run) is None, what="server Job stopped")
    assert run_objects(bed, run) == ([], [])
    assert len(bed.github.calls_to("PATCH", rf"/check-runs/{check['id']}$")) == 1


async def test_kubernetes_deadline_while_the_bot_was_away_is_timed_out(bed: Bed) -> None:
    server = await start_run(bed)
    bed.kube.fail_job(NAMESPACE, server["metadata"]["name"], reason="DeadlineExceeded",
                      message="Job was active longer than specified deadline", exit_code=143)
    check = await report_of(bed, head_of(bed))
    assert check["conclusion"] == "timed_out"


async def test_cancel_train_stops_the_run(bed: Bed) -> None:
    server = await start_run(bed)
    run = server["metadata"]["name"]
    await comment(bed, "/cancel train")
    [check] = bed.github.check_runs_for(REPO, head_of(bed), "flops/federated")
    assert check["conclusion"] == "cancelled"
    assert bed.kube.get("jobs", NAMESPACE, run) is None
    assert run_objects(bed, run) == ([], [])  # clients and Service garbage-collected with the server Job
    assert "cancelled 1 running Job" in bed.github.comments_on(REPO, PR)[-1]["body"]


async def test_restart_mid_run_reports_once(make_bed: BedFactory, github) -> None:
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    first = await make_bed()
    server = await start_run(first)
    run = server["metadata"]["name"]
    await first.server.close()  # the bot goes away mid-run
    write_output(first, server)
    for job in run_objects(first, run)[0]:
        first.kube.succeed_job(NAMESPACE, job["metadata"]["name"])
    first.kube.succeed_job(NAMESPACE, run)
    second = await make_bed()
    check = await report_of(second, head_of(second))
    assert check["conclusion"] == "success"
    await second.server.close()  # a restart: one replica at a time holds the tracker's Lease
    third = await make_bed()  # another restart: nothing is posted again
    await third.settle()
    assert len(github.calls_to("PATCH", rf"/repos/{REPO}/check-runs/{check['id']}$")) == 1
    assert len([c for c in github.comments_on(REPO, PR) if "<!-- flops:federated -->" in c["body"]]) == 1
    assert third.kube.get("jobs", NAMESPACE, run)["metadata"]["annotations"]["flops.dev/reported"] == "success"


async def test_a_run_that_timed_out_while_the_bot_was_down_is_stopped_when_it_comes_back(
        make_bed: BedFactory, github) -> None:
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    first = await make_bed()
    server = await start_run(first, "/train clients=1", cfg=config(timeout="1h"))
    run = server["metadata"]["name"]
    await first.server.close()  # the bot is down while the run passes its timeout (not yet Kubernetes' backstop)
    first.kube.start_job(NAMESPACE, run)
    [pod] = first.kube.list("pods", NAMESPACE, labels={"job-name": run})
    first.kube.set_logs(NAMESPACE, pod["metadata"]["name"], "server", "round 1: waiting for client 0\n")
    job = first.kube.get("jobs", NAMESPACE, run)
    job["status"]["startTime"] = (datetime.now(timezone.utc) - timedelta(hours=1, minutes=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    first.kube.put_object({**job, "kind": "Job", "apiVersion": "batch/v1"})
    second = await make_bed()
    check = await report_of(second, head_of(second))
    assert check["conclusion"] == "timed_out" and "waiting for client 0" in check["output"]["text"]
    await wait_for(lambda: second.kube.get("jobs", NAMESPACE, run) is None, what="run stopped")


async def test_a_run_waiting_for_its_images_survives_a_restart(make_bed: BedFactory, github) -> None:
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    first = await make_bed()
    head = open_pr(first)
    await comment(first, "/train rounds=2 clients=3")
    await first.server.close()
    second = await make_bed()
    await succeed_builds(second, head)
    [server] = await wait_for(lambda: jobs_of(second, "federated-server"), what="server Job after the restart")
    assert (env_of(server)["FL_ROUNDS"], env_of(server)["FL_NUM_CLIENTS"]) == ("2", "3")


async def test_a_redelivered_train_comment_starts_one_run(bed: Bed) -> None:
    head = open_pr(bed)
    await comment(bed, "/build")
    await succeed_builds(bed, head)
    data = _comment_payload(bed, "/train")
    await bed.deliver("issue_comment", data, delivery="d-1")
    await bed.settle()
    await bed.deliver("issue_comment", data, delivery="d-2")  # GitHub's "Redeliver" gives a new delivery id
    await bed.settle()
    assert len(jobs_of(bed, "federated-server")) == 1
    assert len(bed.github.check_runs_for(REPO, head, "flops/federated")) == 1


# --- federated.on_push ----------------------------------------------------------------------------

def push_to_master(bed: Bed, cfg: str, files: dict[str, str]) -> dict[str, Any]:
    """Commit `files` to master and build the recorded push payload GitHub would send for it."""
    if REPO not in bed.github.repos:
        bed.github.add_repo(REPO, default_branch="master")
        bed.github.commit(REPO, "master", {".github/flops.yml": cfg, "Dockerfile.server": "FROM x\n",
                                           "Dockerfile.client": "FROM y\n"})
    return push_payload(bed.github, REPO, files)


async def test_on_push_smoke_run_after_the_default_branch_images_built(bed: Bed) -> None:
    data = push_to_master(bed, config(on_push=True), {"fl/server.py": "print(3)\n"})
    sha = data["after"]
    await bed.deliver("push", data)
    await bed.settle()
    assert jobs_of(bed, "federated-server") == []
    await succeed_builds(bed, sha)
    [server] = await wait_for(lambda: jobs_of(bed, "federated-server"), what="smoke run")
    assert "flops.dev/pr" not in server["metadata"]["labels"]
    assert env_of(server)["FL_NUM_CLIENTS"] == "2" and "FLOPS_PR" not in env_of(server)
    assert server["spec"]["template"]["spec"]["containers"][0]["image"] == \
        f"harbor.example.com/flops/server:master-20261122093000-{sha[:7]}@{digest_of('server')}"
    await wait_for(lambda: "flops.dev/check-run-id" in bed.kube.get("jobs", NAMESPACE, server["metadata"]["name"])
                   ["metadata"]["annotations"], what="check run id")
    write_output(bed, server)
    for job in run_objects(bed, server["metadata"]["name"])[0]:
        bed.kube.succeed_job(NAMESPACE, job["metadata"]["name"])
    bed.kube.succeed_job(NAMESPACE, server["metadata"]["name"])
    check = await report_of(bed, sha)
    assert check["conclusion"] == "success"
    assert check["output"]["title"].startswith("2 of 3 rounds, 2 clients")  # the server stopped early; it says so
    assert "push" in check["output"]["summary"]



async def test_on_push_takes_an_image_the_push_did_not_rebuild_from_the_branch(bed: Bed) -> None:
    cfg = config(on_push=True).replace("dockerfile: Dockerfile.server\n",
                                       "dockerfile: Dockerfile.server\n    paths: [\"fl/server/**\"]\n") \
        .replace("dockerfile: Dockerfile.client\n", "dockerfile: Dockerfile.client\n    paths: [\"fl/client/**\"]\n")
    first = push_to_master(bed, cfg, {"fl/server/main.py": "1\n", "fl/client/main.py": "1\n"})
    await bed.deliver("push", first)
    await bed.settle()
    await succeed_builds(bed, first["after"])
    await wait_for(lambda: len(jobs_of(bed, "federated-server")) == 1, what="first smoke run")
    second = push_to_master(bed, cfg, {"fl/client/main.py": "2\n"})
    await bed.deliver("push", second)
    await bed.settle()
    assert {j["metadata"]["annotations"]["flops.dev/image"] for j in jobs_of(bed, "build")
            if j["metadata"]["annotations"]["flops.dev/sha"] == second["after"]} == {"client"}
    await succeed_builds(bed, second["after"], ("client",))
    run = await wait_for(lambda: [j for j in jobs_of(bed, "federated-server")
                                  if j["metadata"]["annotations"]["flops.dev/sha"] == second["after"]], what="second")
    server_image = run[0]["spec"]["template"]["spec"]["containers"][0]["image"]
    client_image = run_objects(bed, run[0]["metadata"]["name"])[0][0]["spec"]["template"]["spec"]["containers"][0]
    assert server_image.startswith(f"harbor.example.com/flops/server:master-20261122093000-{first['after'][:7]}@")
    assert client_image["image"].startswith(f"harbor.example.com/flops/client:master-20261122093000-"
                                            f"{second['after'][:7]}@")
