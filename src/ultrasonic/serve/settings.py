"""ServeSettings: every setting of `ultrasonic serve` that is not where it listens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ultrasonic.errors import ConfigError
from ultrasonic.inference.ood import ACTIONS as OOD_ACTIONS
from ultrasonic.rundir import ENGINES, RunDir

MAX_UPLOAD_MB = 32.0
# Far below read_image's own cap: a service decodes whatever strangers send it.
MAX_PIXELS = 50_000_000
CAM_CACHE = 256
# Slow clients (serve/protocol.py): headers within 10 s; a body after 10 s at 10 KB/s on average or better,
# so a 32 MB upload over a slow hospital link (10 KB/s) still has 55 minutes.
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 10.0
MIN_BODY_RATE = 10 * 1024
# Decoded bytes of all requests in flight (serve/budget.py): the worst image inside --max-pixels must fit
# alone, or it could never be served: 50 M px of 32-bit grey DICOM or TIFF, estimated at 16 B/px = 763 MB
# (16-bit grey DICOM: 12 B/px = 572 MB; the 7000 x 7000 RLE file measured 191 MB).
DECODE_BUDGET_MB = 1024.0
BUDGET_WAIT_S = 5.0
MAX_BATCH = 16  # requests per model call at most (serve/batcher.py)
MAX_WAIT_MS = 10.0  # the longest a request waits for others to share its call


@dataclass(frozen=True)
class ServeSettings:
    """Limits and files of the service; defaults are those of the `serve` command.

    token:          if set, /predict, /predictions, /cam and /preview need `Authorization: Bearer <token>`
    db:             SQLite audit log (default RUN_DIR/audit.sqlite)
    max_upload_mb:  uploads larger than this get 413
    max_pixels:     images with more pixels get 413 (decompression bombs)
    cam_cache:      how many recent Grad-CAM overlays (GET /cam/{id}.png) and previews (GET /preview/{id}.png)
                    the service can still serve
    max_batch:      at most this many concurrent requests share one model call (1: each its own call)
    max_wait_ms:    how long the first request of a batch waits for others to join it
    engine:         "keras" (heat maps included) or "onnx" (the exported model.onnx through
                    ONNX Runtime: no TensorFlow or Keras loaded, no heat maps)
    ood:            the out-of-distribution gate: "abstain" (an image unlike the training images gets
                    no class and the message "not like the training images"), "warn" or "off"
    log_filenames:  write the uploaded file names to the server log (default: the start of each
                    upload's sha256 instead; names often carry a patient's name or record number)
    header_timeout_s: a connection whose request headers are not complete this long after it opened
                    (or after its previous answer) is closed (0: no limit)
    body_timeout_s: the time a request body gets before min_body_rate applies
    min_body_rate:  bytes/s a body must average after body_timeout_s, else 408 and the connection is
                    closed (0: no limit); a body of L bytes has body_timeout_s + L / min_body_rate seconds
    decode_budget_mb: estimated decoded bytes of all images being decoded at once (0: no budget); an
                    image alone larger gets 413, one that does not fit now waits, then gets 503
    budget_wait_s:  how long a request waits for room in the decoding budget before its 503
    """

    token: str | None = None
    db: Path | None = None
    max_upload_mb: float = MAX_UPLOAD_MB
    max_pixels: int = MAX_PIXELS
    cam_cache: int = CAM_CACHE
    engine: str = "keras"
    ood: str = "abstain"
    log_filenames: bool = False
    header_timeout_s: float = HEADER_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S
    min_body_rate: float = MIN_BODY_RATE
    decode_budget_mb: float = DECODE_BUDGET_MB
    budget_wait_s: float = BUDGET_WAIT_S
    max_batch: int = MAX_BATCH
    max_wait_ms: float = MAX_WAIT_MS

    def __post_init__(self):
        if self.max_upload_mb <= 0:
            raise ConfigError(f"--max-upload-mb must be positive, got {self.max_upload_mb}")
        if self.max_pixels < 1:
            raise ConfigError(f"--max-pixels must be positive, got {self.max_pixels}")
        if self.engine not in ENGINES:
            raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.ood not in OOD_ACTIONS:
            raise ConfigError(f"--ood must be one of {', '.join(OOD_ACTIONS)}, got {self.ood!r}")
        if self.cam_cache < 1:
            raise ConfigError(f"cam_cache must be at least 1, got {self.cam_cache}")
        for option, value in (("--header-timeout", self.header_timeout_s), ("--body-timeout", self.body_timeout_s),
                              ("--min-body-rate", self.min_body_rate), ("--decode-budget-mb", self.decode_budget_mb),
                              ("--budget-wait", self.budget_wait_s)):
            if not value >= 0:  # also NaN
                raise ConfigError(f"{option} must be 0 or more, got {value}")
        if not 1 <= self.max_batch <= 1024:
            raise ConfigError(f"--max-batch must be from 1 to 1024, got {self.max_batch}")
        if not 0 <= self.max_wait_ms <= 1000:
            raise ConfigError(f"--max-wait-ms must be from 0 to 1000 (a wait of at most a second), "
                              f"got {self.max_wait_ms}")
        if self.token is not None and not self.token.strip():
            raise ConfigError("--token is empty; give a secret string or leave the option out")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def decode_budget_bytes(self) -> int:
        return int(self.decode_budget_mb * 1024 * 1024)

    def db_path(self, run_dir: str | Path) -> Path:
        return Path(self.db) if self.db else RunDir(run_dir).audit
