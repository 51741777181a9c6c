"""create_app: the REST service and the web page for one trained run (FastAPI).

    app = create_app("runs/cxr", ServeSettings(token="s3cret"))
    uvicorn.run(app, host="127.0.0.1", port=8000)

Endpoints: GET / (the page), POST /predict, GET /cam/{id}.png, GET /predictions,
GET /model, GET /health, GET /docs. Every error is JSON {"detail": "..."}:
4xx for anything a client sent wrong, 500 only for a bug of ours (logged).
"""

from __future__ import annotations

import base64
import json
import logging
from importlib import resources
from pathlib import Path
from typing import Literal

from fastapi import Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPBearer

from ultrasonic import __version__
from ultrasonic.errors import (BadImageError, ConfigError, ImageTooLargeError, UltrasonicError, UndecodableImageError,
                               UnusableImageError, UploadTooLargeError)
from ultrasonic.inference.predictor import Predictor
from ultrasonic.serve.audit import AuditLog
from ultrasonic.serve.cams import CamStore
from ultrasonic.serve.guard import RequestGuard
from ultrasonic.serve.service import PredictionService
from ultrasonic.serve.settings import ServeSettings

log = logging.getLogger("ultrasonic")

PROTECTED = ("/predict", "/predictions", "/cam/")  # patient data in and out; /, /health, /model stay open
ERRORS = {401: {"description": "token missing or wrong (only when started with --token)"},
          413: {"description": "upload or image too large"},
          415: {"description": "not an image ultrasonic can read"},
          422: {"description": "no `file` field, a bad query parameter, or an image the decoders fail on"}}  # all JSON {"detail": "..."}


def create_app(run_dir: str | Path, settings: ServeSettings = ServeSettings()) -> FastAPI:
    """Load the run once, open the audit log, and wire the endpoints."""
    predictor = Predictor(run_dir, max_pixels=settings.max_pixels, engine=settings.engine, ood=settings.ood)
    service = PredictionService(predictor, AuditLog(settings.db_path(run_dir)), CamStore(settings.cam_cache),
                                settings.max_upload_bytes)
    service.warm_up()
    app = FastAPI(title="ultrasonic", version=__version__,
                  description=f"Predictions of the run `{Path(run_dir).name}` (model {predictor.model_id}).")
    app.add_middleware(RequestGuard, token=settings.token, protected=PROTECTED,
                       max_bytes=settings.max_upload_bytes)
    app.state.service = service
    _add_error_handlers(app)
    _add_routes(app, service)
    return app


def _add_routes(app: FastAPI, service: PredictionService) -> None:
    predictor = service.predictor
    page = resources.files(__package__).joinpath("static/index.html").read_text(encoding="utf-8")
    # Documents the bearer scheme in /docs (its Authorize button); RequestGuard enforces it.
    bearer = [Depends(HTTPBearer(auto_error=False))]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health", summary="Is the service up, and which model does it serve")
    def health() -> dict:
        return {"status": "ok", "model_id": predictor.model_id}

    @app.get("/model", summary="The model: classes, input size, threshold, evaluation metrics")
    def model() -> dict:
        return {"model_id": predictor.model_id, "classes": predictor.classes,
                "image_size": list(predictor.image_size), "channels": predictor.channels,
                "threshold": predictor.threshold if len(predictor.classes) == 2 else None,
                "positive_class": predictor.positive_class, "task": predictor.meta.task,
                "created": predictor.meta.created, "engine": predictor.engine.name,
                "ood": _ood_info(predictor),
                "metrics": _eval_metrics(predictor)}

    @app.post("/predict", summary="Class, probabilities and Grad-CAM of one image (PNG, JPEG, DICOM...)",
              dependencies=bearer, responses=ERRORS)
    def predict(request: Request, file: UploadFile = File(..., description="the image"),
                cam: Literal["url", "base64"] = Query("url", description="base64: also return the overlay "
                                                      "PNG inline as cam_png_base64")) -> dict:
        data = service.read_upload(file.file)
        row, png = service.predict(data, file.filename or "upload", request.client.host if request.client else None)
        if cam == "base64":  # None under the ONNX engine: it has no gradients for a heat map
            row["cam_png_base64"] = base64.b64encode(png).decode("ascii") if png is not None else None
        return row

    @app.get("/cam/{cam_id}.png", summary="Grad-CAM overlay of a recent prediction", dependencies=bearer,
             response_class=Response, responses={200: {"content": {"image/png": {}}}, 404: {}})
    def cam(cam_id: int) -> Response:
        png = service.cams.get(cam_id)
        if png is None:
            return JSONResponse({"detail": f"no overlay for prediction {cam_id}: only the last "
                                           f"{service.cams.capacity} are kept; predict the image again"}, 404)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/predictions", summary="The audit log, newest first", dependencies=bearer,
             responses={code: ERRORS[code] for code in (401, 422)})
    def predictions(limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0)) -> JSONResponse:
        items = service.audit.page(limit, offset)
        return JSONResponse(items, headers={"X-Total-Count": str(service.audit.count())})


def _ood_info(predictor: Predictor) -> dict | None:
    """The out-of-distribution gate the service applies (None: the run has none, or --ood off)."""
    if predictor.gate is None:
        return None
    return {"action": predictor.ood, "method": predictor.gate.method, "threshold": predictor.gate.threshold,
            "false_rejection": predictor.meta.ood.get("false_rejection")}


def _eval_metrics(predictor: Predictor) -> dict | None:
    """RUN_DIR/eval/metrics.json as `ultrasonic evaluate` left it, or None."""
    path = predictor.run.evaluation.metrics
    try:
        # NaN/Infinity (a metric undefined on this test set) become null: strict JSON, as clients expect.
        return json.loads(path.read_text(), parse_constant=lambda _: None)
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("%s: unreadable (%s); /model shows no metrics", path, exc)
        return None


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(UltrasonicError)
    async def our_error(request: Request, exc: UltrasonicError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=_status_of(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(exc.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error in the service; its log has the details"}, 500)


def _status_of(exc: UltrasonicError) -> int:
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
