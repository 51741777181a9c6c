"""PredictionService: one upload in, the prediction row, its preview, its Grad-CAM overlay (when asked)
and its audit record out; concurrent requests share model calls (batcher.py).

The HTTP layer (app.py) only moves bytes and status codes; everything a
prediction means lives here, so it reads the same as `ultrasonic predict`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import BinaryIO

import numpy as np

from ultrasonic.errors import UploadTooLargeError
from ultrasonic.explain.overlay import row_caption
from ultrasonic.inference.predictor import Predictor
from ultrasonic.serve.audit import AuditLog
from ultrasonic.serve.batcher import MAX_BATCH, MAX_WAIT_MS, Batcher
from ultrasonic.serve.budget import DecodeBudget
from ultrasonic.serve.cams import CamStore, preview_png
from ultrasonic.serve.guard import too_large_message

log = logging.getLogger("ultrasonic")

CHUNK = 1024 * 1024
MAX_NAME = 255


class PredictionService:
    """A loaded run plus the audit log and the overlay cache; safe to call from many threads."""

    budget = DecodeBudget(0)  # none; create_app gives the service its --decode-budget-mb (serve/budget.py)

    def __init__(self, predictor: Predictor, audit: AuditLog, cams: CamStore, max_upload_bytes: int,
                 log_filenames: bool = False, max_batch: int = MAX_BATCH, max_wait_ms: float = MAX_WAIT_MS):
        self.predictor = predictor
        self.log_filenames = log_filenames
        self.audit = audit
        self.cams = cams
        self.max_upload_bytes = max_upload_bytes
        # One model, many request threads: Keras models are not documented as thread-safe, so calls
        # run one at a time; throughput comes from the batcher sharing each call among requests.
        self._model_lock = threading.Lock()
        self.max_batch = max_batch
        # max_batch 1: every request its own model call on its own thread, as before there was a batcher
        self.batcher = Batcher(self._model_call, max_batch, max_wait_ms) if max_batch > 1 else None

    def warm_up(self) -> None:
        """Trace the prediction at every batch shape the batcher makes (1, 2, 4, ... max_batch) and the
        gradient once, so no request is the slow one."""
        blank = np.zeros((self.max_batch, *self.predictor.image_size, self.predictor.channels), dtype=np.uint8)
        for size in sorted({min(self.max_batch, 1 << k) for k in range(self.max_batch.bit_length() + 1)}):
            probs, scores = self._model_call(blank[:size])
        if self.explains:
            self._overlay(blank[0], probs[:1], self.predictor.rows(["warm-up"], probs[:1], None if scores is None else scores[:1])[0])

    def close(self) -> None:
        """Stop the batcher's worker (the requests it holds are answered first)."""
        if self.batcher is not None:
            self.batcher.close()

    def read_upload(self, stream: BinaryIO) -> bytes:
        """The uploaded file, read in chunks and refused as soon as it passes the limit."""
        chunks, total = [], 0
        while chunk := stream.read(CHUNK):
            total += len(chunk)
            if total > self.max_upload_bytes:
                raise UploadTooLargeError(too_large_message(self.max_upload_bytes))
            chunks.append(chunk)
        return b"".join(chunks)

    @property
    def explains(self) -> bool:
        """Heat maps need the model's gradients: the Keras engine has them, ONNX Runtime does not."""
        return self.predictor.engine.name == "keras"

    def predict(self, data: bytes, name: str, client: str | None,
                heatmap: bool = False) -> tuple[dict, bytes | None]:
        """The `predict --format json` row plus model_id, sha256, id and the preview's URL; and, when
        `heatmap` is asked for and the engine explains, the Grad-CAM overlay PNG (else None)."""
        name = (name or "upload")[:MAX_NAME]
        with self.budget.hold(data, name):  # the decoded bytes of all requests in flight stay bounded
            decoded = self.predictor.decode(data, name=name)  # sniffs the content; any decoder failure contained
        image = decoded.unwrap()  # BadImageError (a 4xx) if it is no image or the decoder failed on it
        probs, scores = self._predict(image)
        row = self.predictor.rows([name], probs, scores)[0]
        if decoded.notes:
            row["note"] = decoded.note
        # an image the OOD gate refused has no class: its heat map (of the class the model leant to) says so
        png, empty = self._overlay(image, probs, row) if heatmap and self.explains else (None, None)
        sha256 = hashlib.sha256(data).hexdigest()
        row_id = self.audit.record(model_id=self.predictor.model_id, sha256=sha256, file=name, label=row["class"],
                                   probabilities=row["probabilities"], threshold=row["threshold"], client=client,
                                   ood_score=row["ood_score"], in_distribution=row["in_distribution"],
                                   message=row.get("message"))
        self.cams.put(row_id, preview_png(image), kind="preview")
        if png is not None:
            self.cams.put(row_id, png)
        log.info("prediction %d: %s -> %s for %s", row_id, self._logged_name(name, sha256),
                 row.get("message") or row_caption(row), client)
        return {"id": row_id, **row, "model_id": self.predictor.model_id, "sha256": sha256,
                "cam_url": f"/cam/{row_id}.png" if png is not None else None,
                "preview_url": f"/preview/{row_id}.png", "heatmap_empty": empty}, png

    def _logged_name(self, name: str, sha256: str) -> str:
        """What the server log says of the file: its name only with --log-filenames (names often carry a
        patient's name or record number); otherwise the start of the upload's sha256, which the audit
        log (behind the token) ties to the name."""
        return repr(name) if self.log_filenames else f"sha256:{sha256[:12]}"

    def _predict(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(1, K) probabilities and (1,) OOD scores (None without a gate): through the batcher, which
        shares one model call among the requests that arrive together, or (max_batch 1) a call of its own."""
        if self.batcher is not None:
            return self.batcher.submit(image).result()
        return self._model_call(image[None])

    def _model_call(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """One model call on stacked images; a short batch is padded to a power of two up to max_batch
        (predict_array), so only a handful of shapes are ever traced."""
        with self._model_lock:
            return self.predictor.predict_scored(images, batch_size=self.max_batch)

    def _overlay(self, image: np.ndarray, probs: np.ndarray, row: dict) -> tuple[bytes, bool]:
        """The Grad-CAM overlay of the class the model decides (before the gate), and whether its map is
        empty (no region stood out): one gradient call per image, outside the batch, under the model lock."""
        from ultrasonic.explain.gradcam import predicted_overlay  # imports Keras: only the Keras engine gets here

        with self._model_lock:
            return predicted_overlay(self.predictor, image, row, self.predictor.decide(probs)[0])
