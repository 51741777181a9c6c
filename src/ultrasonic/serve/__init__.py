"""The REST service and web page of a trained run: `ultrasonic serve RUN_DIR`.

    from ultrasonic.serve import ServeSettings, serve
    serve("runs/cxr", host="127.0.0.1", port=8000, settings=ServeSettings(token="s3cret"))

FastAPI and uvicorn come with the `serve` extra: pip install 'ultrasonic[serve]'.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path

from ultrasonic.errors import ConfigError, MissingExtraError, ServerStartError
from ultrasonic.serve.local import LocalServer
from ultrasonic.serve.settings import ServeSettings

__all__ = ["ServeSettings", "serve", "LocalServer", "ServerStartError"]

log = logging.getLogger("ultrasonic")


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8000,
          settings: ServeSettings = ServeSettings(), insecure: bool = False) -> None:
    """Load the run, then answer HTTP requests until interrupted (Ctrl-C).

    Off loopback a token is required (ConfigError without one) unless `insecure`: on a hospital
    network, anyone who reaches the port could otherwise send images and read the audit log.
    """
    check_exposure(host, settings.token, insecure)
    try:
        import uvicorn

        from ultrasonic.serve.app import create_app
        from ultrasonic.serve.protocol import Deadlines, protocol_for
    except ImportError as exc:  # exc.name: fastapi, uvicorn or python-multipart, all in the extra
        raise MissingExtraError("serve", "`ultrasonic serve`", exc.name or "fastapi") from exc
    if not 0 < port < 65536:
        raise ConfigError(f"--port {port} is not a TCP port (1-65535)")
    os.umask(0o077)  # whatever the service writes (the audit log, its -wal and -shm) is its owner's alone
    app = create_app(run_dir, settings)
    if not settings.token and not _is_loopback(host):
        log.warning("listening on %s without --token (--insecure): anyone who can reach this machine can "
                    "send images and read the audit log", host)
    log.info("serving %s (model %s); audit log %s", run_dir, app.state.service.predictor.model_id,
             settings.db_path(run_dir))
    deadlines = Deadlines(settings.header_timeout_s, settings.body_timeout_s, settings.min_body_rate)
    uvicorn.run(app, host=host, port=port, log_level="info", http=protocol_for(deadlines))


def check_exposure(host: str, token: str | None, insecure: bool) -> None:
    """A service reachable from other machines needs a token, or the explicit --insecure."""
    if not token and not insecure and not _is_loopback(host):
        raise ConfigError(f"--host {host} is reachable from other machines, and no --token is set: anyone on "
                          "the network could send images and read the audit log; give --token SECRET (or "
                          "$ULTRASONIC_TOKEN), or --insecure to serve without one")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
