"""The bodies the service sends, as pydantic models: they are its OpenAPI schema (/openapi.json), and
FastAPI checks every 200 against them, so a generated client reads what the server really sends.

Every error, whatever its status, is ErrorBody: {"detail": "one sentence a person can act on"}.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# What each error status means, for the `responses` of every route that can give it.
ERROR_MEANINGS = {
    400: "a request the multipart parser or the HTTP layer cannot read (bad framing, Content-Length not a number)",
    401: "token missing or wrong: send 'Authorization: Bearer <token>'",
    404: "no such overlay or preview: it is no longer kept",
    413: "upload or image too large (--max-upload-mb, --max-pixels, --decode-budget-mb)",
    415: "not an image ultrasonic can read (not a recognised format, empty, corrupt)",
    422: "no single `file` part, a bad query parameter, an image the decoders fail on, or a blank or tiny image",
    503: "the decoding budget is full (--decode-budget-mb): send the image again after the Retry-After seconds",
}


class ErrorBody(BaseModel):
    """Every 4xx and 5xx of the service."""

    detail: str = Field(description="what was wrong and what to do, in one or two sentences")


class Health(BaseModel):
    status: str = Field(description="'ok' whenever the service answers")
    model_id: str


class OodInfo(BaseModel):
    action: str = Field(description="abstain, warn or off (--ood)")
    method: str
    threshold: float
    false_rejection: float | None = None


class Rate(BaseModel):
    value: float | None = Field(description="the proportion, 0-1")
    low: float | None = Field(description="95 % exact (Clopper-Pearson) interval, lower end; null: counts unknown")
    high: float | None = Field(description="95 % exact interval, upper end; null: counts unknown")


class OperatingPoint(BaseModel):
    name: str | None = Field(description="how the threshold was chosen: the setting (youden, sensitivity=0.95...)")
    threshold: float
    sensitivity: Rate
    specificity: Rate
    source: str = Field(description="the images the figures are measured on: validation, or a site sample")


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())  # model_id is a field name here, not pydantic's

    model_id: str
    classes: list[str]
    image_size: list[int]
    channels: int
    threshold: float | None = Field(description="the operating point; null for more than two classes")
    positive_class: str | None
    task: str
    created: str | None
    engine: str = Field(description="keras or onnx")
    ood: OodInfo | None = Field(description="the out-of-distribution gate; null: none")
    metrics: dict[str, Any] | None = Field(description="RUN_DIR/eval/metrics.json without any server path; null: "
                                                       "the run was not evaluated")
    operating_point: OperatingPoint | None = Field(None, description="sensitivity and specificity at the threshold "
                                                   "where it was chosen; null: more than two classes or not recorded")


class _Row(BaseModel):
    """The fields `ultrasonic predict --format json` gives."""

    model_config = ConfigDict(populate_by_name=True, protected_namespaces=())

    id: int = Field(description="the audit log row of this prediction")
    file: str = Field(description="the file name the client sent")
    label: str | None = Field(alias="class", description="the decided class; null when the OOD gate refused it")
    probabilities: dict[str, float]
    threshold: float | None
    ood_score: float | None
    in_distribution: bool | None
    message: str | None = Field(None, description="only for an image unlike the training images")


class Prediction(_Row):
    model_id: str
    sha256: str = Field(description="of the uploaded bytes")
    cam_url: str | None = Field(description="GET it for the Grad-CAM overlay PNG; null unless ?heatmap=true "
                                            "(or cam=base64), and under the ONNX engine")
    preview_url: str = Field(description="GET it for a PNG of the image as the model saw it (any upload format)")
    heatmap_empty: bool | None = Field(None, description="true: the heat map has no signal (no region stood out); "
                                                         "null when no heat map was made")
    note: str | None = Field(None, description="what the decoder warned about (several frames, ...)")
    cam_png_base64: str | None = Field(None, description="only with ?cam=base64: the overlay PNG inline")


class AuditRow(_Row):
    file: str | None = Field(description="the file name the client sent; null unless the service has a token "
                                         "(names often carry a patient's name or record number)")
    time: str = Field(description="ISO 8601, UTC")
    model_id: str
    sha256: str
    client: str | None
    prev_hash: str | None = Field(description="the hash of the row before (64 zeros for the first); null for a row "
                                              "from before the chain")
    hash: str | None = Field(description="SHA-256 over this row and prev_hash: `ultrasonic audit verify DB` "
                                         "checks the chain")


def error_responses(*codes: int) -> dict[int | str, dict]:
    """The `responses` of a route: ErrorBody for each status it can give."""
    return {code: {"model": ErrorBody, "description": ERROR_MEANINGS[code]} for code in codes}
