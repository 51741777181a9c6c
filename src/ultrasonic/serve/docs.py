"""GET /docs: Swagger UI served from the `swagger-ui-bundle-v2` package, so it works on a network with no
way out (FastAPI's default loads it from a CDN: a blank page on a hospital network).

The package ships Swagger UI 5 (it reads OpenAPI 3.1, which FastAPI writes); the older `swagger-ui-bundle`
ships 4.15, which refuses 3.1 documents. Without the package /docs says how to get it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

ASSETS = "/docs/assets"
FILES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon-32x32.png": "image/png"}


def add_docs(app: FastAPI) -> None:
    """Register /docs and its assets; the app must be made with docs_url=None."""
    folder = _swagger_folder()

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        if folder is None:
            return HTMLResponse("<p>/docs needs the package swagger-ui-bundle-v2: pip install "
                                "'ultrasonic[serve]'. The schema itself is at <a href='/openapi.json'>"
                                "/openapi.json</a>.</p>", 503)
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - API",
                                   swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
                                   swagger_ui_parameters={"validatorUrl": None})  # no badge from the web

    @app.get(ASSETS + "/{name}", include_in_schema=False)
    def asset(name: str):
        if folder is None or name not in FILES:  # a fixed list: no path from the client reaches the disk
            return JSONResponse({"detail": f"no asset {name!r}"}, 404)
        return FileResponse(folder / name, media_type=FILES[name], headers={"Cache-Control": "max-age=86400"})


def _swagger_folder() -> Path | None:
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    return Path(str(swagger_ui_path))
