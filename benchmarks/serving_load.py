"""The served model under load: N concurrent clients for a fixed time, real photos mixed with bad
inputs, against `facectx serve` on loopback.

    .venv/bin/python benchmarks/serving_load.py [--model-uri models:/facectx-cascade@champion]
        [--clients 8] [--seconds 60] [--bad-every 3] [--photos ../shared/datasets/lfw/images]

Reported: requests/s; p50/p95 latency for good and bad requests apart; 5xx count (must be 0);
requests without an answer (must be 0); every bad input answered 4xx with its reason; the
server's resident memory (all its processes) just after warm-up and at the end.
tests/test_serving_load.py runs a short version against a tiny model.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests
from PIL import Image


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _body(columns, rows) -> bytes:
    return json.dumps({"dataframe_split": {"columns": columns, "data": rows}}).encode()


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Request:
    kind: str  # "good" or the bad input's name
    body: bytes
    reason: str = ""  # for a bad input: a fragment its 4xx message must hold


def bad_requests(photo: Path) -> list[Request]:
    """One request per kind of bad input a client can send, each with the reason it must get."""
    data = photo.read_bytes()
    gradient = np.repeat(np.linspace(0, 255, 200, dtype=np.uint8)[None, :, None], 200, axis=0).repeat(3, axis=2)
    return [
        Request("text", _body(["image"], [[_b64(b"this is not a photo\n")]]), "not a usable photo"),
        Request("truncated_jpeg", _body(["image"], [[_b64(data[: len(data) // 2])]]), "not a usable photo"),
        Request("not_base64", _body(["image"], [["%%% not base64 %%%"]]), "base64"),
        Request("no_face", _body(["image"], [[_b64(_png(gradient))]]), "no face"),
        Request("wrong_column", _body(["photo"], [[_b64(data)]]), "image"),
        Request("empty_body", b"", ""),  # MLflow's own parser answers; any 4xx will do
    ]


def request_mix(photos: list[Path], bad_every: int) -> list[Request]:
    """Good photos with a bad input after every `bad_every - 1` of them, cycling through the kinds."""
    good = [Request("good", _body(["image"], [[_b64(p.read_bytes())]])) for p in photos]
    bad = itertools.cycle(bad_requests(photos[0]))
    mix = []
    for i, request in enumerate(good):
        mix.append(request)
        if bad_every and (i + 1) % (bad_every - 1) == 0:
            mix.append(next(bad))
    return mix


@dataclass
class Outcome:
    kind: str
    status: int | None  # None: no answer (connection error, timeout)
    seconds: float
    message: str = ""


@dataclass
class LoadResult:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    rss_mib: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MiB)

    def summary(self, bad_reasons: dict[str, str]) -> dict:
        good = [o for o in self.outcomes if o.kind == "good"]
        bad = [o for o in self.outcomes if o.kind != "good"]

        def percentile(values, q):
            return round(float(np.percentile(values, q)) * 1000, 1) if values else None

        wrong_bad = [o for o in bad if not (o.status and 400 <= o.status < 500 and bad_reasons[o.kind] in o.message)]
        return {
            "requests": len(self.outcomes),
            "seconds": round(self.seconds, 1),
            "requests_per_second": round(len(self.outcomes) / self.seconds, 2) if self.seconds else None,
            "good": len(good),
            "good_ok": sum(o.status == 200 for o in good),
            "good_p50_ms": percentile([o.seconds for o in good], 50),
            "good_p95_ms": percentile([o.seconds for o in good], 95),
            "bad": len(bad),
            "bad_p50_ms": percentile([o.seconds for o in bad], 50),
            "bad_p95_ms": percentile([o.seconds for o in bad], 95),
            "server_errors_5xx": sum(1 for o in self.outcomes if o.status and o.status >= 500),
            "no_answer": sum(o.status is None for o in self.outcomes),
            "bad_without_4xx_and_reason": [(o.kind, o.status, o.message[:120]) for o in wrong_bad],
            "rss_mib_after_warmup": self.rss_mib[0][1] if self.rss_mib else None,
            "rss_mib_end": self.rss_mib[-1][1] if self.rss_mib else None,
        }


def server_rss_mib(pid: int) -> float:
    """Resident memory of the server: the process and all its children (the uvicorn workers)."""
    import psutil

    root = psutil.Process(pid)
    processes = [root, *root.children(recursive=True)]
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):  # a worker that exited meanwhile holds nothing
            total += process.memory_info().rss
    return total / 2**20


def run_load(
    url: str, mix: list[Request], clients: int, seconds: float, server_pid: int | None = None, timeout_s: float = 120
) -> LoadResult:
    """`clients` threads, each sending the next request of the shared cycle until `seconds` have
    passed (a request under way is finished: nothing is cut off and counted lost)."""
    result, lock = LoadResult(), threading.Lock()
    cycle = itertools.cycle(mix)
    start = time.perf_counter()
    end = start + seconds

    def client():
        session = requests.Session()
        while time.perf_counter() < end:
            with lock:
                request = next(cycle)
            began = time.perf_counter()
            try:
                response = session.post(
                    f"{url}/invocations",
                    data=request.body,
                    headers={"Content-Type": "application/json"},
                    timeout=timeout_s,
                )
                status, text = response.status_code, response.text
            except requests.RequestException as err:
                status, text = None, str(err)
            outcome = Outcome(request.kind, status, time.perf_counter() - began, text if status != 200 else "")
            with lock:
                result.outcomes.append(outcome)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        if server_pid:
            result.rss_mib.append((round(time.perf_counter() - start, 1), round(server_rss_mib(server_pid), 1)))
        time.sleep(1.0)
    result.seconds = time.perf_counter() - start
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`facectx serve` as a user starts it, on a free loopback port; stopped on exit."""

    def __init__(self, model_uri: str, log_path: Path, env: dict | None = None, workers: int = 1):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_path, "wb")  # noqa: SIM115 (the server's log, open while it runs; closed in stop())
        facectx = Path(sys.executable).parent / "facectx"
        self.process = subprocess.Popen(
            [str(facectx), "serve", "--model-uri", model_uri, "-p", str(self.port), "-w", str(workers)],
            env=env or os.environ.copy(),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.log_path = log_path

    def wait_ready(self, timeout_s: float = 180) -> None:
        deadline = time.time() + timeout_s
        while True:
            try:
                if requests.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            if self.process.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"facectx serve did not start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-uri", default="models:/facectx-cascade@champion")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup-seconds", type=float, default=10)
    parser.add_argument("--bad-every", type=int, default=3, help="one bad input in every N requests")
    parser.add_argument("--photos", default="../shared/datasets/lfw/images")
    parser.add_argument("--count", type=int, default=200, help="distinct real photos to send")
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument("--out", default="benchmarks/out/serving_load.json")
    args = parser.parse_args()

    photos = sorted(Path(args.photos).rglob("*.jpg"))[: args.count]
    if not photos:
        raise SystemExit(f"no photos under {args.photos}")
    mix = request_mix(photos, args.bad_every)
    reasons = {r.kind: r.reason for r in bad_requests(photos[0])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    server = Server(args.model_uri, Path(args.out).with_suffix(".server.log"), workers=args.workers)
    try:
        server.wait_ready()
        run_load(server.url, mix, args.clients, args.warmup_seconds)  # models loaded, caches warm
        result = run_load(server.url, mix, args.clients, args.seconds, server_pid=server.process.pid)
    finally:
        server.stop()
    summary = {
        "model_uri": args.model_uri,
        "clients": args.clients,
        "workers": args.workers,
        **result.summary(reasons),
        "rss_mib_samples": result.rss_mib,
    }
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "rss_mib_samples"}, indent=2))


if __name__ == "__main__":
    main()
