"""create_app: the REST service and the web page for one trained run (FastAPI).

    app = create_app("runs/cxr", ServeSettings(token="s3cret"))
    uvicorn.run(app, host="127.0.0.1", port=8000)

Endpoints: GET / (the page), POST /predict, GET /cam/{id}.png, GET /preview/{id}.png, GET /predictions,
GET /audit (the audit log as a page), GET /model, GET /health, GET /docs. Every error is JSON {"detail": "..."}:
4xx for anything a client sent wrong, 500 only for a bug of ours (logged).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
from importlib import resources
from pathlib import Path
from typing import Literal

from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPBearer

from ultrasonic import __version__
from ultrasonic.errors import (BadImageError, ConfigError, ImageTooLargeError, ServiceBusyError, UltrasonicError,
                               UndecodableImageError, UnusableImageError, UploadTooLargeError)
from ultrasonic.inference.predictor import Predictor
from ultrasonic.serve.audit import AuditLog
from ultrasonic.serve.budget import DecodeBudget
from ultrasonic.serve.cams import CamStore
from ultrasonic.serve.docs import add_docs
from ultrasonic.serve.guard import RequestGuard
from ultrasonic.serve.schemas import AuditRow, Health, ModelInfo, Prediction, error_responses
from ultrasonic.serve.service import PredictionService
from ultrasonic.serve.settings import ServeSettings

log = logging.getLogger("ultrasonic")

PROTECTED = ("/predict", "/predictions", "/cam/", "/preview/")  # patient data in and out; /, /health, /model stay open
MAX_OFFSET = 2**62  # far past any audit log, and inside SQLite's 64-bit integers
# `file` as OpenAPI 3.0's binary string too (FastAPI writes only 3.1's contentMediaType): generated clients
# (openapi-python-client, Schemathesis) then send a file part, not a text field the endpoint refuses.
BINARY = {"format": "binary"}
PATH_KEYS = ("evaluated_on",)  # keys of metrics.json that name a folder of the server


def create_app(run_dir: str | Path, settings: ServeSettings = ServeSettings()) -> FastAPI:
    """Load the run once, open the audit log, and wire the endpoints."""
    predictor = Predictor(run_dir, max_pixels=settings.max_pixels, engine=settings.engine, ood=settings.ood)
    service = PredictionService(predictor, AuditLog(settings.db_path(run_dir)), CamStore(settings.cam_cache),
                                settings.max_upload_bytes, log_filenames=settings.log_filenames,
                                max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms)
    service.budget = DecodeBudget(settings.decode_budget_bytes, settings.budget_wait_s)
    service.warm_up()
    app = FastAPI(title="ultrasonic", version=__version__, docs_url=None, redoc_url=None, lifespan=_closing(service),
                  description=f"Predictions of the run `{Path(run_dir).name}` (model {predictor.model_id}). "
                              "Every error is JSON {\"detail\": \"...\"}.")
    app.add_middleware(RequestGuard, token=settings.token, protected=PROTECTED,
                       max_bytes=settings.max_upload_bytes)
    app.state.service = service
    _add_error_handlers(app)
    _add_routes(app, service, bool(settings.token))
    add_docs(app)
    return app


def _closing(service: PredictionService):
    """The app's lifespan: at shutdown, the batcher answers what it holds and stops."""
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.close()
    return lifespan


def _add_routes(app: FastAPI, service: PredictionService, guarded: bool) -> None:
    predictor = service.predictor
    page = resources.files(__package__).joinpath("static/index.html").read_text(encoding="utf-8")
    audit_html = resources.files(__package__).joinpath("static/audit.html").read_text(encoding="utf-8")
    # With a token: the bearer scheme in the schema (and /docs' Authorize button), and 401 among the
    # answers of the routes it guards; RequestGuard enforces it. Without one, neither.
    bearer = [Depends(HTTPBearer(auto_error=False))] if guarded else []
    auth = (401,) if guarded else ()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health", summary="Is the service up, and which model does it serve", response_model=Health)
    def health() -> dict:
        return {"status": "ok", "model_id": predictor.model_id}

    @app.get("/model", summary="The model: classes, input size, threshold, evaluation metrics",
             response_model=ModelInfo)
    def model() -> dict:
        return {"model_id": predictor.model_id, "classes": predictor.classes,
                "image_size": list(predictor.image_size), "channels": predictor.channels,
                "threshold": predictor.threshold if len(predictor.classes) == 2 else None,
                "positive_class": predictor.positive_class, "task": predictor.meta.task,
                "created": predictor.meta.created, "engine": predictor.engine.name,
                "ood": _ood_info(predictor),
                "metrics": _eval_metrics(predictor), "operating_point": _operating_point(predictor)}

    @app.post("/predict", summary="Class, probabilities, preview and (?heatmap=true) Grad-CAM of one image",
              dependencies=[*bearer, Depends(_one_file)], responses=error_responses(400, *auth, 413, 415, 422, 503),
              response_model=Prediction, response_model_exclude_unset=True)
    def predict(request: Request, file: UploadFile = File(..., description="the image", json_schema_extra=BINARY),
                cam: Literal["url", "base64"] = Query("url", description="base64: also return the overlay "
                                                      "PNG inline as cam_png_base64 (implies heatmap=true)"),
                heatmap: bool = Query(False, description="compute the Grad-CAM overlay (cam_url); it costs a "
                                                         "gradient call per image")) -> dict:
        data = service.read_upload(file.file)
        row, png = service.predict(data, file.filename or "upload", request.client.host if request.client else None,
                                   heatmap=heatmap or cam == "base64")
        if cam == "base64":  # None under the ONNX engine: it has no gradients for a heat map
            row["cam_png_base64"] = base64.b64encode(png).decode("ascii") if png is not None else None
        return row

    @app.get("/cam/{cam_id}.png", summary="Grad-CAM overlay of a recent prediction", dependencies=bearer,
             response_class=Response, responses={200: {"content": {"image/png": {}}, "description": "the PNG"},
                                                 **error_responses(*auth, 404, 422)})
    def cam(cam_id: int) -> Response:
        png = service.cams.get(cam_id)
        if png is None:
            return JSONResponse({"detail": f"no overlay for prediction {cam_id}: only the last "
                                           f"{service.cams.capacity} are kept; predict the image again"}, 404)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/preview/{preview_id}.png", summary="The image of a recent prediction as the model saw it",
             dependencies=bearer, response_class=Response,
             responses={200: {"content": {"image/png": {}}, "description": "the PNG"},
                        **error_responses(*auth, 404, 422)})
    def preview(preview_id: int) -> Response:
        png = service.cams.get(preview_id, kind="preview")
        if png is None:
            return JSONResponse({"detail": f"no preview for prediction {preview_id}: only the last "
                                           f"{service.cams.capacity} are kept; predict the image again"}, 404)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/predictions", summary="The audit log, newest first", dependencies=bearer,
             responses=error_responses(*auth, 422), response_model=list[AuditRow])
    def predictions(response: Response, limit: int = Query(50, ge=1, le=1000),
                    offset: int = Query(0, ge=0, le=MAX_OFFSET)) -> list[dict]:
        response.headers["X-Total-Count"] = str(service.audit.count())
        rows = service.audit.page(limit, offset)
        if not guarded:  # anyone on this machine can ask: names (often a patient's) only behind the token
            for row in rows:
                row["file"] = None
        return rows

    @app.get("/audit", response_class=HTMLResponse, include_in_schema=False)
    def audit_page() -> HTMLResponse:
        # Open like /: the page holds no data; it reads /predictions with the token the user types.
        return HTMLResponse(audit_html)


async def _one_file(request: Request) -> None:
    """Refuse more than one `file` part: only one image is predicted, and silently dropping the others
    would leave the client believing they were."""
    parts = (await request.form()).getlist("file")  # the form FastAPI has already parsed (cached)
    if len(parts) > 1:
        raise HTTPException(422, f"{len(parts)} parts named 'file': send one image per request "
                                 "(POST /predict once per image)")


def _ood_info(predictor: Predictor) -> dict | None:
    """The out-of-distribution gate the service applies (None: the run has none, or --ood off)."""
    if predictor.gate is None:
        return None
    return {"action": predictor.ood, "method": predictor.gate.method, "threshold": predictor.gate.threshold,
            "false_rejection": predictor.meta.ood.get("false_rejection")}


def _operating_point(predictor: Predictor) -> dict | None:
    """The threshold's validation sensitivity and specificity (meta.json "validation", as training/calibrate.py
    operating_point() measured them), with exact intervals from the split's class counts (meta "data").
    A recalibrated run's figures are on its site sample, whose class counts meta.json does not keep: no interval."""
    meta = predictor.meta
    if len(meta.classes) != 2 or "sensitivity" not in meta.validation:
        return None
    recalibrated = "lineage" in meta.extra
    counts = {} if recalibrated else ((meta.data or {}).get("counts") or {}).get("val") or {}
    positives = counts.get(meta.positive_class)
    negatives = sum(n for c, n in counts.items() if c != meta.positive_class) if positives is not None else None
    return {"name": meta.operating_point or meta.threshold_method, "threshold": meta.threshold,
            "sensitivity": _rate(meta.validation["sensitivity"], positives),
            "specificity": _rate(meta.validation.get("specificity"), negatives),
            "source": "site sample" if recalibrated else "validation"}


def _rate(value: float | None, n: int | None) -> dict:
    """{"value", "low", "high"}: the interval from value * n successes, when that is a whole count."""
    from ultrasonic.evaluation.intervals import proportion_ci

    if not isinstance(value, (int, float)) or not math.isfinite(value):  # NaN: undefined on that split
        return {"value": None, "low": None, "high": None}
    hits = value * n if n else None
    if hits is None or abs(hits - round(hits)) > 1e-6:
        return {"value": value, "low": None, "high": None}
    low, high = proportion_ci(round(hits), n)
    return {"value": value, "low": low, "high": high}


def _eval_metrics(predictor: Predictor) -> dict | None:
    """RUN_DIR/eval/metrics.json as `ultrasonic evaluate` left it, or None."""
    path = predictor.run.evaluation.metrics
    try:
        # NaN/Infinity (a metric undefined on this test set) become null: strict JSON, as clients expect.
        return _without_paths(json.loads(path.read_text(), parse_constant=lambda _: None))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("%s: unreadable (%s); /model shows no metrics", path, exc)
        return None


def _without_paths(value):
    """metrics.json less what names a place on the server (evaluated_on, any string with a slash):
    a client learns the figures, not the server's folders."""
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items() if k not in PATH_KEYS and not _is_path(v)}
    if isinstance(value, list):
        return [_without_paths(v) for v in value if not _is_path(v)]
    return value


def _is_path(value) -> bool:
    return isinstance(value, str) and ("/" in value or "\\" in value)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(UltrasonicError)
    async def our_error(request: Request, exc: UltrasonicError) -> JSONResponse:
        retry = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, ServiceBusyError) else None
        return JSONResponse({"detail": str(exc)}, status_code=_status_of(exc), headers=retry)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(exc.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error in the service; its log has the details"}, 500)


def _status_of(exc: UltrasonicError) -> int:
    if isinstance(exc, ServiceBusyError):
        return 503
    if isinstance(exc, (UploadTooLargeError, ImageTooLargeError)):
        return 413
    # a readable format whose content a decoder failed on, or an image with nothing to classify (blank, tiny)
    if isinstance(exc, (UndecodableImageError, UnusableImageError)):
        return 422
    if isinstance(exc, BadImageError):
        return 415
    return 400 if isinstance(exc, ConfigError) else 422


def _validation_message(errors: list[dict]) -> str:
    """FastAPI's list of validation errors as one sentence a person can act on."""
    parts = []
    for error in errors:
        where = ".".join(str(x) for x in error.get("loc", ()) if x not in ("body", "query", "path"))
        if where == "file" and error.get("type") == "missing":
            parts.append("no image in the request: send it as multipart/form-data in the field 'file' "
                         "(curl -F file=@image.png ...)")
        elif where == "file":  # a text field, or a file part without a file name (Starlette reads it as text)
            parts.append("the field 'file' holds text, not a file: send the image as a file part with a file "
                         "name (curl -F file=@image.png ...)")
        else:
            parts.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)
