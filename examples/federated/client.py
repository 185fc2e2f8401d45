"""FedAvg client FL_CLIENT_ID: trains on its own (non-IID) data from the global weights each
round and sends the result to the server at FL_SERVER_ADDRESS, until the server says it is done.

It waits up to FL_CONNECT_TIMEOUT seconds (default 300) for the server to come up: in the
cluster the server's Pod may start after this one.
"""
from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np

import fedavg

CONNECT_TIMEOUT = float(os.environ.get("FL_CONNECT_TIMEOUT", "300"))
POLL_TIMEOUT = 90.0  # longer than the server's long-poll


def call(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=POLL_TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def call_with_retries(url: str, body: dict[str, Any] | None = None, *, for_seconds: float = 60) -> dict[str, Any]:
    """The server's answer; connection errors retried with backoff for `for_seconds`."""
    deadline, pause = time.monotonic() + for_seconds, 0.1
    while True:
        try:
            status, answer = call(url, body)
            if status >= 500:
                raise OSError(f"HTTP {status}")
            return answer
        except OSError as exc:
            if time.monotonic() + pause > deadline:
                raise SystemExit(f"client: the server at {url} did not answer for {for_seconds:.0f}s: {exc}") from None
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def main() -> int:
    env = fedavg.Env.read()
    if env.client_id is None:
        raise SystemExit("client: FL_CLIENT_ID is not set")
    x, y = fedavg.client_data(env.client_id)
    base = f"http://{env.server_address}"
    print(f"client {env.client_id}: {len(y)} samples ({y.mean():.0%} positive); server {base}", flush=True)
    call_with_retries(f"{base}/healthz", for_seconds=CONNECT_TIMEOUT)
    finished = 0
    while True:
        state = call_with_retries(f"{base}/model?after={finished}&client={env.client_id}")
        if state["done"]:
            print(f"client {env.client_id}: training over after round {finished}", flush=True)
            return 0
        if state["round"] <= finished:
            continue  # the long-poll ended without a new round
        weights = fedavg.local_training(np.asarray(state["weights"]), x, y)
        loss, accuracy = fedavg.loss_and_accuracy(weights, x, y)
        answer = call_with_retries(f"{base}/update", {"client": env.client_id, "round": state["round"],
                                                      "weights": weights.tolist(), "samples": len(y), "loss": loss})
        print(f"client {env.client_id}: round {state['round']}: local loss {loss:.4f}, accuracy {accuracy:.4f}"
              f"{'' if answer.get('accepted') else ' (too late: the server moved on)'}", flush=True)
        finished = state["round"]


if __name__ == "__main__":
    sys.exit(main())
