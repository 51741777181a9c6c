"""Load test of `ultrasonic serve`: requests from 1, 4 and 16 concurrent clients, a tenth of them malformed,
against the service as it was (one model call and one Grad-CAM per request) and as it is (batched, no heat map
unless asked), in the same run.

For each mode it starts `ultrasonic serve RUN` on 127.0.0.1 (a free port, a
fresh audit log in a temporary folder), sends the requests from a thread pool
of each client count in turn (httpx, loopback only), then checks and prints:

- the modes: "today" is `--max-batch 1` and `?heatmap=true` on every request
  (each request its own model call and its own Grad-CAM: the service before
  batching); "batched" is the defaults (`--max-batch 16 --max-wait-ms 10`)
  without `heatmap`; requests/s and p50/p95 latency of each, and their ratio;

- zero 5xx answers, every malformed request a 4xx, every good image a 200;
- every 200 logged exactly once in the audit log: its SQLite file holds one
  row per 200 and no other, each with the id and SHA-256 the answer gave;
- the server's resident memory (VmRSS) at the end within 20 % of its value
  after the first 100 requests (sampled every 100 requests, printed);
- no traceback in the server's log; requests/s and latency p50/p95.

Malformed: random bytes, a truncated JPEG, an empty file, a text file named
.png, and a multipart form without the `file` field, in equal shares. Good:
distinct chest X-ray JPEGs from ../shared/data/chest_xray_224 when present,
else synthetic PNGs. Without --run, a tiny 64 px run is trained on synthetic
images first (about a minute), so this works on a fresh clone.

    python benchmarks/load_serve.py [--run RUN_DIR] [--requests 2000] [--clients 1 4 16]
                                    [--modes today batched] [--json out.json]

--requests is per mode and client count.

Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import os
import sqlite3
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from common import SHARED, machine, write_json  # noqa: E402

from ultrasonic.serve import LocalServer, ServerStartError  # noqa: E402

MALFORMED = ("random_bytes", "truncated_jpeg", "empty_file", "text_file", "missing_field")
SIZE = 64  # the tiny run's input size and the synthetic images' size
START_TIMEOUT_S = 300  # importing the backend and loading the model, on busy cores
REQUEST_TIMEOUT_S = 300  # 16 requests queue behind one model lock on 2 cores
MEMORY_BASE_AFTER = 100
MEMORY_TOLERANCE = 0.20
# mode -> (`serve` options, query of every POST /predict)
MODES = {"today": (("--max-batch", "1"), {"heatmap": "true"}), "batched": ((), {})}


@dataclass
class Request:
    kind: str  # "good" or one of MALFORMED
    name: str
    data: bytes | None  # None: no file part at all (missing_field)


@dataclass
class Answer:
    kind: str
    status: int | None  # None: no answer (connection error or timeout)
    seconds: float
    body: dict | list | None
    sha256: str | None  # of the bytes sent
    error: str | None = None


@dataclass
class Load:
    answers: list[Answer] = field(default_factory=list)
    rss_mb: list[tuple[int, float]] = field(default_factory=list)  # (requests answered, VmRSS MB)
    seconds: float = 0.0


# ---- the run and the requests ------------------------------------------------------------------------------

def train_tiny_run(root: Path) -> Path:
    """A 64 px binary run trained for 3 epochs on synthetic lesion PNGs (about a minute on 2 cores)."""
    from PIL import Image

    from ultrasonic import train
    from ultrasonic.data import lesion_images

    images, labels, _ = lesion_images(160, size=SIZE, seed=0)
    for i, (x, y) in enumerate(zip(images, labels)):
        folder = root / "data" / ("normal", "pneumonia")[y]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[..., 0]).save(folder / f"person{i // 2}_img_{i}.png")
    result = train(str(root / "data"), str(root / "run"), cache_dir=str(root / "cache"), image_size=SIZE, epochs=3,
                   batch_size=16, width=16, tensorboard=False, verbose=0, min_split_images=10)
    return Path(result.run_dir)


def good_images(n: int) -> tuple[list[tuple[str, bytes]], str]:
    """n distinct images as (name, bytes): real chest X-ray JPEGs spread over the folder, else synthetic PNGs."""
    root = SHARED / "chest_xray_224"
    files = sorted(root.rglob("*.jpeg")) if root.is_dir() else []
    if len(files) >= n:
        picked = [files[round(k * len(files) / n)] for k in range(n)]
        return [(p.name, p.read_bytes()) for p in picked], f"{n} chest X-ray JPEGs from {root}"
    from ultrasonic.data import lesion_images

    images, _, _ = lesion_images(n, size=SIZE, seed=1)
    return [(f"synthetic{k:04d}.png", _encode(x[..., 0], "PNG")) for k, x in enumerate(images)], \
        f"{n} synthetic {SIZE} px PNGs ({root} absent or too small)"


def _encode(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def malformed(kind: str, k: int, rng: np.random.Generator, jpeg: bytes) -> Request:
    """The k-th malformed request of `kind`."""
    if kind == "random_bytes":
        return Request(kind, f"noise{k}.png", rng.bytes(int(rng.integers(1, 8192))))
    if kind == "truncated_jpeg":
        return Request(kind, f"cut{k}.jpeg", jpeg[:int(len(jpeg) * rng.uniform(0.05, 0.6))])
    if kind == "empty_file":
        return Request(kind, f"empty{k}.png", b"")
    if kind == "text_file":
        return Request(kind, f"notes{k}.png", f"patient notes {k}, not an image\n".encode() * 20)
    return Request(kind, f"wrong_field{k}.png", None)


def plan(n: int, bad_fraction: float, seed: int) -> tuple[list[Request], str]:
    """n requests in a shuffled order, round(n * bad_fraction) of them malformed (equal shares of each kind)."""
    rng = np.random.default_rng(seed)
    n_bad = round(n * bad_fraction)
    good, source = good_images(n - n_bad)
    jpeg = next((data for name, data in good if name.endswith(".jpeg")), None) or _encode(
        rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8), "JPEG", quality=90)
    requests = [Request("good", name, data) for name, data in good]
    requests += [malformed(MALFORMED[k % len(MALFORMED)], k, rng, jpeg) for k in range(n_bad)]
    return [requests[i] for i in rng.permutation(len(requests))], source


# ---- the server ----------------------------------------------------------------------------------------------

# ---- the load ------------------------------------------------------------------------------------------------

def send(client, url: str, request: Request, params: dict | None = None) -> Answer:
    """One POST /predict; the answer, its time and the SHA-256 of the bytes sent."""
    import httpx

    if request.data is None:
        files = {"image": (request.name, b"a file in the wrong field")}
    else:
        files = {"file": (request.name, request.data)}
    sha = hashlib.sha256(request.data).hexdigest() if request.data is not None else None
    start = time.perf_counter()
    try:
        reply = client.post(url + "/predict", files=files, params=params)
    except httpx.HTTPError as exc:
        return Answer(request.kind, None, time.perf_counter() - start, None, sha, f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - start
    try:
        body = reply.json()
    except ValueError:
        body = None
    return Answer(request.kind, reply.status_code, seconds, body, sha)


def run_load(server, requests: list[Request], clients: int, time_limit: float, params: dict | None = None) -> Load:
    """Send every request from `clients` threads at once; sample the server's RSS every 100 answers."""
    import httpx

    load = Load()
    lock = threading.Lock()
    deadline = time.monotonic() + time_limit

    def one(request: Request) -> None:
        if time.monotonic() > deadline:
            return  # over the time limit: left unsent, and reported as unanswered
        answer = send(client, server.url, request, params)
        with lock:
            load.answers.append(answer)
            done = len(load.answers)
            if done % 100 == 0:
                load.rss_mb.append((done, server.rss_mb()))
                print(f"  {done:5d} answered, server VmRSS {load.rss_mb[-1][1]:.1f} MB", flush=True)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    with httpx.Client(timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            list(pool.map(one, requests))
        load.seconds = time.perf_counter() - start
    return load


# ---- the checks ----------------------------------------------------------------------------------------------

def audit_rows(db: Path) -> list[tuple[int, str]]:
    """(id, sha256) of every row of the audit log, read from the SQLite file itself (read-only)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT id, sha256 FROM predictions").fetchall()
    finally:
        conn.close()


def audit_check(answers: list[Answer], rows: list[tuple[int, str]], total_header: int | None) -> dict:
    """Each 200 logged exactly once, with its id and the SHA-256 of the bytes sent; no other row."""
    ok = [a for a in answers if a.status == 200]
    by_id = collections.Counter(row_id for row_id, _ in rows)
    sha_of = dict(rows)
    matched = sum(1 for a in ok if isinstance(a.body, dict) and by_id.get(a.body.get("id")) == 1
                  and sha_of[a.body["id"]] == a.body.get("sha256") == a.sha256)
    returned_ids = {a.body.get("id") for a in ok if isinstance(a.body, dict)}
    return {"rows": len(rows), "answered_200": len(ok), "matched": matched,
            "rows_not_answered": len(set(by_id) - returned_ids), "x_total_count": total_header,
            "passed": matched == len(ok) == len(rows) and total_header == len(rows)}


def percentiles_ms(answers: list[Answer]) -> dict:
    seconds = [a.seconds for a in answers if a.status is not None]
    if not seconds:
        return {"n": 0}
    p50, p95 = np.percentile(seconds, [50, 95]) * 1000
    return {"n": len(seconds), "p50_ms": round(float(p50), 1), "p95_ms": round(float(p95), 1),
            "max_ms": round(max(seconds) * 1000, 1)}


def evaluate(load: Load, n_planned: int, audit: dict | None, log_text: str, rss_end: float) -> tuple[dict, dict]:
    """The figures and the named checks (each: passed, and what was seen); the audit check only with `audit`
    (it covers every load a server took)."""
    answers = load.answers
    bad = [a for a in answers if a.kind != "good"]
    good = [a for a in answers if a.kind == "good"]
    statuses = collections.Counter(str(a.status) for a in answers)
    by_kind = {kind: dict(collections.Counter(str(a.status) for a in answers if a.kind == kind))
               for kind in ("good", *MALFORMED)}
    n_5xx = sum(1 for a in answers if a.status is not None and a.status >= 500)
    bad_4xx = sum(1 for a in bad if a.status is not None and 400 <= a.status < 500
                  and isinstance(a.body, dict) and a.body.get("detail"))
    good_200 = sum(1 for a in good if a.status == 200)
    base = next((mb for done, mb in load.rss_mb if done == MEMORY_BASE_AFTER), float("nan"))
    growth = rss_end / base - 1
    tracebacks = log_text.count("Traceback")
    figures = {
        "requests": n_planned, "answered": sum(1 for a in answers if a.status is not None),
        "seconds": round(load.seconds, 1), "requests_per_s": round(len(answers) / load.seconds, 2),
        "latency_all": percentiles_ms(answers), "latency_good": percentiles_ms(good),
        "latency_malformed": percentiles_ms(bad), "status": dict(statuses), "status_by_kind": by_kind,
        "rss_mb_after_100": round(base, 1), "rss_mb_end": round(rss_end, 1),
        "rss_growth": round(growth, 4), "rss_mb_samples": load.rss_mb,
        "errors": collections.Counter(a.error.split(":")[0] for a in answers if a.error).most_common(),
    }
    checks = {
        "every request answered": (figures["answered"] == n_planned, f"{figures['answered']} of {n_planned}"),
        "zero 5xx": (n_5xx == 0, f"{n_5xx}"),
        "every malformed request a 4xx JSON error": (bad_4xx == len(bad), f"{bad_4xx} of {len(bad)}"),
        "every good image a 200": (good_200 == len(good), f"{good_200} of {len(good)}"),
        f"server memory at the end within {MEMORY_TOLERANCE:.0%} of after {MEMORY_BASE_AFTER} requests": (
            abs(growth) <= MEMORY_TOLERANCE, f"{base:.1f} -> {rss_end:.1f} MB ({growth:+.1%})"),
        "no traceback in the server log": (tracebacks == 0, f"{tracebacks}"),
    }
    if audit is not None:
        checks["every 200 logged exactly once (id + sha256), no other row"] = (
            audit["passed"], f"{audit['matched']} of {audit['answered_200']} matched; {audit['rows']} rows; "
                             f"X-Total-Count {audit['x_total_count']}")
    return figures, {name: {"passed": bool(ok), "seen": seen} for name, (ok, seen) in checks.items()}


def versions() -> dict:
    names = ("ultrasonic", "keras", "tensorflow-cpu", "tensorflow", "jax", "fastapi", "starlette", "uvicorn",
             "python-multipart", "httpx", "pillow", "numpy")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def print_report(figures: dict, checks: dict, context: dict) -> None:
    f = figures
    print(f"\nload test, mode {context['mode']}: {f['requests']} requests, {context['clients']} clients")
    print(f"answered {f['answered']} in {f['seconds']} s: {f['requests_per_s']} requests/s")
    for what in ("all", "good", "malformed"):
        lat = f[f"latency_{what}"]
        if lat["n"]:
            print(f"latency {what:9s} (n={lat['n']:4d}): p50 {lat['p50_ms']:7.1f} ms, p95 {lat['p95_ms']:7.1f} ms, "
                  f"max {lat['max_ms']:7.1f} ms")
    print("status by kind: " + "; ".join(f"{kind} {counts}" for kind, counts in f["status_by_kind"].items()))
    print(f"server VmRSS: {f['rss_mb_after_100']} MB after 100 requests, {f['rss_mb_end']} MB at the end "
          f"({f['rss_growth']:+.1%})")
    if f["errors"]:
        print(f"transport errors: {f['errors']}")
    print("checks:")
    for name, check in checks.items():
        print(f"  {'PASS' if check['passed'] else 'FAIL'}  {name}: {check['seen']}")


def run_mode(mode: str, run_dir: Path, requests: list[Request], args, tmp: Path) -> dict:
    """One server in `mode`, loaded by each client count in turn; its figures and checks."""
    import httpx

    options, params = MODES[mode]
    db = tmp / f"audit_{mode}.sqlite"
    try:
        server = LocalServer(run_dir, tmp / f"server_{mode}.log", "--db", str(db), *options,
                             start_timeout=START_TIMEOUT_S)
    except ServerStartError as exc:
        sys.exit(str(exc))
    print(f"mode {mode}: server pid {server.process.pid} on {server.url} ({' '.join(options) or 'defaults'}; "
          f"query {params or 'none'}), VmRSS {server.rss_mb():.1f} MB after start-up", flush=True)
    loads, rss_ends = [], []
    try:
        for clients in args.clients:
            print(f"  {clients} clients:", flush=True)
            loads.append(run_load(server, requests, clients, args.time_limit, params))
            rss_ends.append(server.rss_mb())
        vmhwm = server.rss_mb("VmHWM")
        alive = server.process.poll() is None
        total = httpx.get(server.url + "/predictions", params={"limit": 1}, timeout=60) if alive else None
        total_header = int(total.headers["x-total-count"]) if total is not None else None
    finally:
        exit_code = server.stop()
    answers = [a for load in loads for a in load.answers]
    audit = audit_check(answers, audit_rows(db), total_header)
    by_clients = {}
    for k, (clients, load, rss_end) in enumerate(zip(args.clients, loads, rss_ends)):
        figures, checks = evaluate(load, len(requests), audit if k == len(loads) - 1 else None, server.log(),
                                   rss_end)
        by_clients[clients] = {"figures": figures, "checks": checks}
    # uvicorn re-raises SIGTERM after its graceful shutdown, so the exit status is -15 when all went well
    clean = "Application shutdown complete" in server.log()
    by_clients[args.clients[-1]]["checks"]["server up until the end, then a clean shutdown"] = {
        "passed": alive and clean, "seen": f"alive {alive}; exit status {exit_code}, shutdown complete {clean}"}
    for clients, result in by_clients.items():
        print_report(result["figures"], result["checks"], {"mode": mode, "clients": clients})
    print(f"mode {mode}: audit log {audit['rows']} rows, {audit['matched']} of {audit['answered_200']} answers "
          f"matched by id and sha256; peak VmHWM {vmhwm:.1f} MB")
    return {"options": list(options), "query": params, "vmhwm_mb": round(vmhwm, 1), "audit": audit,
            "by_clients": by_clients}


def comparison(results: dict) -> list[dict]:
    """Per client count: requests/s and p50/p95 of each mode, and batched against today."""
    rows = []
    for clients in next(iter(results.values()))["by_clients"]:
        row = {"clients": clients}
        for mode, result in results.items():
            f = result["by_clients"][clients]["figures"]
            row[mode] = {"requests_per_s": f["requests_per_s"], "p50_ms": f["latency_all"].get("p50_ms"),
                         "p95_ms": f["latency_all"].get("p95_ms")}
        if {"today", "batched"} <= set(results):
            today, batched = row["today"], row["batched"]
            row["ratio_requests_per_s"] = round(batched["requests_per_s"] / today["requests_per_s"], 2)
            row["ratio_p95"] = round(batched["p95_ms"] / today["p95_ms"], 3)
        rows.append(row)
    return rows


def print_comparison(rows: list[dict], modes: list[str]) -> None:
    print("\n| clients | " + " | ".join(f"{m} req/s | {m} p50 ms | {m} p95 ms" for m in modes)
          + (" | req/s ratio | p95 ratio |" if len(modes) == 2 else " |"))
    print("|---" * (1 + 3 * len(modes) + (2 if len(modes) == 2 else 0)) + "|")
    for row in rows:
        cells = [str(row["clients"])]
        for m in modes:
            cells += [f"{row[m]['requests_per_s']:.1f}", f"{row[m]['p50_ms']:.0f}", f"{row[m]['p95_ms']:.0f}"]
        if "ratio_requests_per_s" in row:
            cells += [f"{row['ratio_requests_per_s']:.2f}x", f"{row['ratio_p95']:.2f}x"]
        print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="a trained run directory (default: train a tiny synthetic one)")
    parser.add_argument("--requests", type=int, default=2000, help="per mode and client count")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--modes", nargs="+", choices=sorted(MODES), default=["today", "batched"])
    parser.add_argument("--bad-fraction", type=float, default=0.1)
    parser.add_argument("--time-limit", type=float, default=1800, help="stop sending after this many seconds "
                                                                        "(per mode and client count)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the figures and checks to this file")
    args = parser.parse_args(argv)
    if args.requests < MEMORY_BASE_AFTER * 2:
        parser.error(f"--requests must be at least {MEMORY_BASE_AFTER * 2} (memory is compared with request "
                     f"{MEMORY_BASE_AFTER})")
    with tempfile.TemporaryDirectory(prefix="load_serve_") as tmp:
        tmp = Path(tmp)
        if args.run:
            run_dir = Path(args.run)
        else:
            print("training a tiny synthetic run (--run RUN_DIR skips this)...", flush=True)
            run_dir = train_tiny_run(tmp)
        requests, source = plan(args.requests, args.bad_fraction, args.seed)
        print(f"good images: {source}", flush=True)
        results = {mode: run_mode(mode, run_dir, requests, args, tmp) for mode in args.modes}
    rows = comparison(results)
    print_comparison(rows, args.modes)
    checks = [c for r in results.values() for by in r["by_clients"].values() for c in by["checks"].values()]
    context = {"run": str(run_dir), "good_images": source, "clients": args.clients, "modes": args.modes,
               "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])}
    if args.json:
        write_json(args.json, {"comparison": rows, "modes": results, **context, "machine": machine(),
                               "versions": versions()})
        print(f"wrote {args.json}")
    return 0 if all(c["passed"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
