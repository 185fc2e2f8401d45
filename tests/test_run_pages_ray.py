"""A RayJob regression run's page over real HTTP: the RayJob as KubeRay reports it, its submitter's and its Ray
cluster's Pods, their logs live (masked) and, once the cluster is gone, the logs the bot kept; `/runs` lists it."""
from __future__ import annotations

from tests.conftest import INSTALLATION, NAMESPACE, SECRET, BedFactory, wait_for
from tests.emulators.github import GitHubEmulator
from tests.emulators.kuberay import SUBMITTER, KubeRay
from tests.emulators.mlflow import MlflowEmulator
from tests.test_regression import MAINTAINER, REPO, comment, completed, open_pr
from tests.test_regression_ray import mlflow, rayjob_for, setup_repo  # noqa: F401 (the fixture)
from tests.test_run_pages import CLIENT_ID, CLIENT_SECRET, SIGNIN, answer, events, live_paths, sign_in


async def test_a_rayjob_run_page_shows_its_cluster_and_keeps_its_logs(make_bed: BedFactory, github: GitHubEmulator,
                                                                     mlflow: MlflowEmulator) -> None:  # noqa: F811
    github.add_installation(INSTALLATION, MAINTAINER, [REPO])
    github.oauth.add_client(CLIENT_ID, CLIENT_SECRET)
    bed = await make_bed(**SIGNIN)
    setup_repo(bed, mlflow)
    sha = open_pr(bed, {"regression.py": "print(2)\n"})
    await comment(bed, "/regression")
    rayjob = rayjob_for(bed, sha)
    name, run_id = rayjob["metadata"]["name"], rayjob["metadata"]["labels"]["flops.dev/run"]
    kuberay = KubeRay(bed.kube)
    kuberay.run(name)
    head = kuberay.head_pod(name)
    assert head is not None
    head_name = head["metadata"]["name"]
    [submitter] = bed.kube.list("pods", NAMESPACE, labels={"job-name": name})
    cookies = await sign_in(bed, MAINTAINER, f"/runs/{run_id}")
    status, _, page = await answer(bed, f"/runs/{run_id}", cookies)
    assert status == 200, page
    assert f"RayJob <code>{name}</code>" in page and "Running / RUNNING" in page
    assert head_name in page and submitter["metadata"]["name"] in page
    workers = bed.kube.list("pods", NAMESPACE, labels={"ray.io/node-type": "worker"})
    assert workers and all(w["metadata"]["name"] in page for w in workers)
    paths = live_paths(page)
    ray_head = [p for p in paths if f"/pods/{head_name}/" in p]
    assert ray_head and any(f"/containers/{SUBMITTER}/live" in p for p in paths), paths
    bed.kube.append_log(NAMESPACE, head_name, ray_head[0].split("/containers/")[1].split("/")[0],
                        f"raylet up token={SECRET}\n")
    seen = await events(bed, ray_head[0], cookies, until="raylet up")
    assert seen[-1] == "raylet up token=***"

    kuberay.succeed(name, logs=f"seed 7 done {SECRET}\n")
    await wait_for(lambda: completed(bed, sha), what="the RayJob run reported")
    await bed.settle()
    kuberay.shut_down(name)
    status, _, page = await answer(bed, f"/runs/{run_id}", cookies)
    assert status == 200 and "Complete / SUCCEEDED" in page and head_name not in page  # the cluster is gone
    await bed.deps.kube.delete_job(name, kind="RayJob")  # the RayJob goes (its TTL): the kept record is shown
    await wait_for(lambda: not bed.kube.list("pods", NAMESPACE, labels={"job-name": name}), what="submitter gone")
    status, _, page = await answer(bed, f"/runs/{run_id}", cookies)
    assert status == 200 and "this is what the bot kept" in page and head_name in page, page
    status, _, head_log = await answer(bed, ray_head[0].replace("/live", "/log"), cookies)
    assert status == 200 and "raylet up token=***" in head_log and SECRET not in head_log
    kept_path = f"/runs/{run_id}/pods/{submitter['metadata']['name']}/containers/{SUBMITTER}/log"
    status, _, kept = await answer(bed, kept_path, cookies)
    assert status == 200 and "seed 7 done ***" in kept and SECRET not in kept
    status, _, listing = await answer(bed, f"/runs?repo={REPO}", cookies)
    assert status == 200 and run_id in listing
