"""PredictionService: one upload in, the prediction row, its Grad-CAM overlay and its audit record out.

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
from ultrasonic.inference.ood import MESSAGE
from ultrasonic.inference.predictor import Predictor
from ultrasonic.serve.audit import AuditLog
from ultrasonic.serve.budget import DecodeBudget
from ultrasonic.serve.cams import CamStore
from ultrasonic.serve.guard import too_large_message

log = logging.getLogger("ultrasonic")

CHUNK = 1024 * 1024
MAX_NAME = 255


class PredictionService:
    """A loaded run plus the audit log and the overlay cache; safe to call from many threads."""

    budget = DecodeBudget(0)  # none; create_app gives the service its --decode-budget-mb (serve/budget.py)

    def __init__(self, predictor: Predictor, audit: AuditLog, cams: CamStore, max_upload_bytes: int,
                 log_filenames: bool = False):
        self.predictor = predictor
        self.log_filenames = log_filenames
        self.audit = audit
        self.cams = cams
        self.max_upload_bytes = max_upload_bytes
        # One model, many request threads: Keras models are not documented as thread-safe,
        # and on 1-2 cores running them one at a time costs no throughput.
        self._model_lock = threading.Lock()

    def warm_up(self) -> None:
        """Trace the prediction and the gradient once, so the first request is not the slow one."""
        blank = np.zeros((1, *self.predictor.image_size, self.predictor.channels), dtype=np.uint8)
        self._run_model(blank, class_index=0)

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

    def predict(self, data: bytes, name: str, client: str | None) -> tuple[dict, bytes | None]:
        """The `predict --format json` row plus model_id, sha256 and id; and the overlay PNG (Keras engine)."""
        name = (name or "upload")[:MAX_NAME]
        with self.budget.hold(data, name):  # the decoded bytes of all requests in flight stay bounded
            decoded = self.predictor.decode(data, name=name)  # sniffs the content; any decoder failure contained
        image = decoded.unwrap()  # BadImageError (a 4xx) if it is no image or the decoder failed on it
        probs, scores, heatmap = self._run_model(image[None], class_index=None)
        row = self.predictor.rows([name], probs, scores)[0]
        if decoded.notes:
            row["note"] = decoded.note
        # an image the OOD gate refused has no class: its heat map (of the class the model leant to) says so
        caption = MESSAGE if row["class"] is None else f"{row['class']} {row['probabilities'][row['class']]:.2f}"
        png = None
        if heatmap is not None:
            from ultrasonic.explain.gradcam import overlay_png

            png = overlay_png(image, heatmap, caption)  # as `ultrasonic explain` captions
        sha256 = hashlib.sha256(data).hexdigest()
        row_id = self.audit.record(model_id=self.predictor.model_id, sha256=sha256, file=name, label=row["class"],
                                   probabilities=row["probabilities"], threshold=row["threshold"], client=client,
                                   ood_score=row["ood_score"], in_distribution=row["in_distribution"],
                                   message=row.get("message"))
        if png is not None:
            self.cams.put(row_id, png)
        log.info("prediction %d: %s -> %s for %s", row_id, self._logged_name(name, sha256),
                 row.get("message") or caption, client)
        return {"id": row_id, **row, "model_id": self.predictor.model_id, "sha256": sha256,
                "cam_url": f"/cam/{row_id}.png" if png is not None else None}, png

    def _logged_name(self, name: str, sha256: str) -> str:
        """What the server log says of the file: its name only with --log-filenames (names often carry a
        patient's name or record number); otherwise the start of the upload's sha256, which the audit
        log (behind the token) ties to the name."""
        return repr(name) if self.log_filenames else f"sha256:{sha256[:12]}"

    def _run_model(self, images: np.ndarray,
                   class_index: int | None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Probabilities, OOD scores (None without a gate) and, with the Keras engine, the Grad-CAM heat
        map of the class the model decides (before the gate)."""
        with self._model_lock:
            probs, scores = self.predictor.predict_scored(images, batch_size=len(images))  # no padding to 64
            if not self.explains:
                return probs, scores, None
            from ultrasonic.explain.gradcam import gradcam  # imports Keras: only the Keras engine gets here

            if class_index is None:
                class_index = self.predictor.classes.index(self.predictor.decide(probs)[0])
            heatmap = gradcam(self.predictor.model, images, class_index=class_index)[0]
        return probs, scores, heatmap
