"""Memory of `ultrasonic serve` under the worst uploads inside its limits, with and without the decoding budget.

The worst file: an RLE-compressed 16-bit grey DICOM at the pixel cap (7000 x 7000 = 49 M px, under
--max-pixels' 50 M), about 1.5 MB on the wire and about 1.2 GB while it decodes. For each setting
(the default --decode-budget-mb, then --decode-budget-mb 0 = no budget) it starts the real server,
decodes one small DICOM (so pydicom is loaded: "at rest" is a warm server), samples the server's VmRSS
for a second (the base), sends `--clients` uploads of the worst file at once, samples VmRSS every 20 ms
until all are answered (the peak), and counts the answers by status. The ceiling holds when
peak - base <= the budget (every upload in flight is bounded by it) + 256 MB (everything else:
the upload bytes, the audit log, the small resized images).

A guard stops the server when its VmRSS passes --kill-above-mb (default 8000): without a budget,
sixteen of these files would ask for about 19 GB and could take the machine down; the table then
says "killed" and the peak is at least the guard.

    nice python benchmarks/serve_memory.py [--run RUN_DIR] [--clients 16] [--side 7000] [--json out.json]

Without --run, a tiny 64 px run is trained first (benchmarks/load_serve.py's, about a minute).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from common import write_json  # noqa: E402

from ultrasonic.serve import LocalServer  # noqa: E402
from ultrasonic.serve.settings import DECODE_BUDGET_MB  # noqa: E402

OTHER_MB = 256  # what the ceiling allows beyond the budget
SAMPLE_S = 0.02
REQUEST_TIMEOUT_S = 900


def rle_dicom(rows: int, cols: int) -> bytes:
    """A 16-bit grey DICOM, RLE Lossless, of a vertical ramp (0..4000): each row is one run per byte plane,
    so the file is tiny (about 32 bytes per 1000 pixels) and decodes to rows x cols x 2 bytes and more."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless, SecondaryCaptureImageStorage, generate_uid

    values = (np.arange(rows) * 4000 // rows).astype(np.uint16)
    segments = [b"".join(_rle_run(int(v) >> 8, cols) for v in values),
                b"".join(_rle_run(int(v) & 255, cols) for v in values)]  # high bytes, then low bytes (PS3.5 G)
    segments = [s + b"\0" * (len(s) % 2) for s in segments]
    header = np.zeros(16, "<u4")
    header[:3] = 2, 64, 64 + len(segments[0])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = RLELossless
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "OT", rows, cols, 1
    ds.PhotometricInterpretation, ds.PixelRepresentation = "MONOCHROME2", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelData = encapsulate([header.tobytes() + b"".join(segments)])
    ds["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True, little_endian=True, implicit_vr=False)
    return buffer.getvalue()


def _rle_run(value: int, n: int) -> bytes:
    """PackBits: `value` repeated n times (header byte 257 - count repeats the next byte count times)."""
    full, rest = divmod(n, 128)
    tail = b"" if not rest else bytes([257 - rest, value]) if rest > 1 else bytes([0, value])
    return bytes([129, value]) * full + tail


class Sampler(threading.Thread):
    """VmRSS of the server every SAMPLE_S; terminates it above kill_mb (and says so)."""

    def __init__(self, server: LocalServer, kill_mb: float):
        super().__init__(daemon=True)
        self.server, self.kill_mb = server, kill_mb
        self.peak = 0.0
        self.killed = False
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            rss = self.server.rss_mb()
            if rss == rss:  # not NaN: the server still runs
                self.peak = max(self.peak, rss)
                if rss > self.kill_mb and not self.killed:
                    self.killed = True
                    self.server.process.kill()
            time.sleep(SAMPLE_S)


def measure(run_dir: Path, data: bytes, small: bytes, clients: int, budget_mb: float | None, kill_mb: float,
            folder: Path) -> dict:
    import httpx

    name = "default" if budget_mb is None else f"{budget_mb:g}"
    extra = [] if budget_mb is None else ["--decode-budget-mb", f"{budget_mb:g}"]
    with LocalServer(run_dir, folder / f"serve-{name}.log", "--db", str(folder / f"audit-{name}.sqlite"),
                     *extra, start_timeout=300) as server:
        assert httpx.post(server.url + "/predict", files={"file": ("small.dcm", small)}, timeout=120).status_code == 200
        time.sleep(1.0)
        samples = []
        for _ in range(10):
            samples.append(server.rss_mb())
            time.sleep(0.1)
        base = float(np.median(samples))
        sampler = Sampler(server, kill_mb)
        sampler.start()
        start = time.monotonic()

        def upload(k: int) -> tuple[int | str, str | None]:
            try:
                r = httpx.post(server.url + "/predict", files={"file": (f"worst{k}.dcm", data)},
                               timeout=REQUEST_TIMEOUT_S)
                return r.status_code, r.headers.get("retry-after")
            except httpx.HTTPError as exc:
                return type(exc).__name__, None

        with ThreadPoolExecutor(clients) as pool:
            answers = list(pool.map(upload, range(clients)))
        seconds = time.monotonic() - start
        sampler.done.set()
        sampler.join()
        traceback = "Traceback" in server.log()
    statuses = [s for s, _ in answers]
    counts = {str(s): statuses.count(s) for s in sorted(set(statuses), key=str)}
    limit = (DECODE_BUDGET_MB if budget_mb is None else budget_mb) or None
    return {"budget_mb": DECODE_BUDGET_MB if budget_mb is None else budget_mb, "base_mb": round(base),
            "peak_mb": round(sampler.peak), "growth_mb": round(sampler.peak - base), "killed": sampler.killed,
            "statuses": counts, "retry_after": sorted({r for _, r in answers if r}), "seconds": round(seconds, 1),
            "traceback_in_log": traceback,
            "ceiling_mb": None if limit is None else limit + OTHER_MB,
            "ceiling_holds": None if limit is None else (not sampler.killed and sampler.peak - base <= limit + OTHER_MB)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="a trained run directory (default: train a tiny synthetic one)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--side", type=int, default=7000, help="rows = columns of the worst DICOM (default 7000)")
    parser.add_argument("--kill-above-mb", type=float, default=8000)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.run:
            run_dir = Path(args.run)
        else:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from load_serve import train_tiny_run

            print("training a tiny synthetic run (--run RUN_DIR skips this)...", flush=True)
            run_dir = train_tiny_run(folder)
        data, small = rle_dicom(args.side, args.side), rle_dicom(256, 256)
        print(f"worst file: {args.side} x {args.side} 16-bit RLE DICOM, {len(data) / 2**20:.2f} MB; "
              f"{args.clients} uploads at once", flush=True)
        results = [measure(run_dir, data, small, args.clients, budget, args.kill_above_mb, folder)
                   for budget in (None, 0.0)]
    header = ("decode budget", "base MB", "peak MB", "peak - base", "answers", "seconds", "ceiling")
    rows = [(f"{r['budget_mb']:g} MB" if r["budget_mb"] else "off", r["base_mb"], r["peak_mb"],
             f"{r['growth_mb']}{' (killed)' if r['killed'] else ''}",
             " ".join(f"{k}: {v}" for k, v in r["statuses"].items()), r["seconds"],
             "-" if r["ceiling_holds"] is None else
             f"{'holds' if r['ceiling_holds'] else 'BROKEN'} (<= base + {r['ceiling_mb']:g})") for r in results]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)))
    if args.json:
        write_json(args.json, {"side": args.side, "file_mb": round(len(data) / 2**20, 2), "clients": args.clients,
                               "results": results})
        print(f"wrote {args.json}")
    return 0 if results[0]["ceiling_holds"] and not results[0]["traceback_in_log"] else 1


if __name__ == "__main__":
    sys.exit(main())
