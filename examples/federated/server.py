"""FedAvg aggregation server: HTTP on FL_PORT; waits for all FL_NUM_CLIENTS clients each round
(FL_ROUND_TIMEOUT seconds at most, then averages the ones that reported), averages their weights
by sample count, evaluates, and writes `<FLOPS_OUTPUT>metrics.json` after every round and the
global model under `<FLOPS_OUTPUT>model/` at the end.

Protocol (JSON over HTTP):
  GET  /model?after=R&client=K  long-poll: the global weights of the first round after R
                                (`{"round", "weights", "done"}`); `done` once training is over
  POST /update                  `{"client", "round", "weights", "samples", "loss"}`
  GET  /healthz                 200 once listening
"""
from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

import fedavg
import output

ROUND_TIMEOUT = float(os.environ.get("FL_ROUND_TIMEOUT", "600"))
POLL_SECONDS = 30.0  # a long-poll answers at least this often
GOODBYE_SECONDS = 30.0  # how long the server waits for the clients to hear that training is over


class Federation:
    """The server's state, shared by the HTTP threads and the training loop."""

    def __init__(self, num_clients: int) -> None:
        self.num_clients = num_clients
        self.round = 0
        self.weights = fedavg.initial_weights(int(os.environ.get("FL_SEED", "0")))
        self.done = False
        self.updates: dict[int, tuple[np.ndarray, int, float]] = {}
        self.seen: set[int] = set()  # clients that ever asked for the model
        self.told_done: set[int] = set()
        self.changed = threading.Condition()

    def start_round(self, number: int, weights: np.ndarray) -> None:
        with self.changed:
            self.round, self.weights, self.updates = number, weights, {}
            self.changed.notify_all()

    def model_after(self, after: int, client: int | None) -> dict[str, Any]:
        with self.changed:
            if client is not None:
                self.seen.add(client)
            self.changed.wait_for(lambda: self.round > after or self.done, timeout=POLL_SECONDS)
            if self.done and client is not None:
                self.told_done.add(client)
                self.changed.notify_all()
            return {"round": self.round, "weights": self.weights.tolist(), "done": self.done}

    def submit(self, update: dict[str, Any]) -> bool:
        with self.changed:
            client = int(update["client"])
            if update.get("round") != self.round or self.done or not 0 <= client < self.num_clients:
                return False
            weights = np.asarray(update["weights"], dtype=float)
            if weights.shape != self.weights.shape or not np.all(np.isfinite(weights)):
                return False
            self.updates[client] = (weights, int(update["samples"]), float(update.get("loss", "nan")))
            self.changed.notify_all()
            return True

    def collect(self, deadline: float) -> dict[int, tuple[np.ndarray, int, float]]:
        """This round's updates once every client sent one, or whatever arrived by `deadline`."""
        with self.changed:
            self.changed.wait_for(lambda: len(self.updates) == self.num_clients, timeout=max(0, deadline - time.time()))
            return dict(self.updates)

    def finish(self) -> None:
        with self.changed:
            self.done = True
            self.changed.notify_all()
            self.changed.wait_for(lambda: self.seen <= self.told_done, timeout=GOODBYE_SECONDS)


def handler_for(federation: Federation) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            if url.path == "/healthz":
                self._reply(200, {"ok": True})
            elif url.path == "/model":
                client = query.get("client", [""])[0]
                self._reply(200, federation.model_after(int(query.get("after", ["0"])[0]),
                                                        int(client) if client.isdigit() else None))
            else:
                self._reply(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/update":
                self._reply(404, {"error": "not found"})
                return
            try:
                update = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                accepted = federation.submit(update)
            except (ValueError, KeyError, TypeError) as exc:
                self._reply(400, {"error": str(exc)})
                return
            self._reply(200 if accepted else 409, {"accepted": accepted, "round": federation.round})

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (quiet: one line per round instead)
            pass

    return Handler


def test_set(num_clients: int) -> tuple[np.ndarray, np.ndarray]:
    """Held-out data from every client's distribution: how good the global model is for all."""
    parts = [fedavg.client_data(k, split="test") for k in range(num_clients)]
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def train(env: fedavg.Env, federation: Federation, out: output.Output) -> int:
    x_test, y_test = test_set(env.num_clients)
    weights = federation.weights
    rounds: list[dict[str, Any]] = []
    for number in range(1, env.rounds + 1):
        federation.start_round(number, weights)
        updates = federation.collect(time.time() + ROUND_TIMEOUT)
        missing = sorted(set(range(env.num_clients)) - set(updates))
        if missing:
            log(f"round {number}: clients {missing} did not report within {ROUND_TIMEOUT:.0f}s")
        if not updates:
            log(f"round {number}: no client reported; stopping")
            out.write_json("metrics.json", {"rounds": rounds, "metrics": {}})
            return 1
        weights = fedavg.federated_average([(w, n) for w, n, _ in updates.values()])
        loss, accuracy = fedavg.loss_and_accuracy(weights, x_test, y_test)
        samples = sum(n for _, n, _ in updates.values())
        rounds.append({"round": number, "metrics": {"loss": round(loss, 6), "accuracy": round(accuracy, 6),
                                                    "clients": len(updates), "samples": samples}})
        log(f"round {number}: {len(updates)} clients, {samples} samples, loss {loss:.4f}, accuracy {accuracy:.4f}")
        out.write_json("metrics.json", {"rounds": rounds, "metrics": {}})  # progress, visible if the run times out
    final = {k: rounds[-1]["metrics"][k] for k in ("loss", "accuracy")}
    buffer = io.BytesIO()
    np.save(buffer, weights)
    out.write_bytes("model/weights.npy", buffer.getvalue())
    out.write_json("model/model.json", {"kind": "logistic-regression", "features": fedavg.FEATURES,
                                        "layout": "weights[:-1] per feature, weights[-1] bias",
                                        "rounds": env.rounds, "clients": env.num_clients, **final})
    out.write_json("metrics.json", {"rounds": rounds, "metrics": final})
    log(f"done: {env.rounds} rounds, final loss {final['loss']:.4f}, accuracy {final['accuracy']:.4f}")
    return 0


def log(line: str) -> None:
    print(line, flush=True)


def main() -> int:
    env = fedavg.Env.read()
    out = output.Output.from_env()
    federation = Federation(env.num_clients)
    http = ThreadingHTTPServer(("0.0.0.0", env.port), handler_for(federation))
    http.daemon_threads = True
    threading.Thread(target=http.serve_forever, daemon=True).start()
    log(f"listening on :{env.port}; {env.rounds} rounds with {env.num_clients} clients; writing to {out}")
    try:
        code = train(env, federation, out)
        federation.finish()
        return code
    finally:
        http.shutdown()


if __name__ == "__main__":
    sys.exit(main())
