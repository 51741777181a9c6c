"""The DICOMweb client of `ultrasonic pacs`: credentials from the environment, and a PACS's refusals as one line.

    client = connect("http://127.0.0.1:8042/dicom-web")   # dicomweb_client.DICOMwebClient
    with answered(url, "search (QIDO-RS)"):
        client.search_for_instances(...)

Credentials come only from environment variables, never from the command line (a command line
is visible to every user of the machine in `ps` and kept in shell histories):
ULTRASONIC_PACS_USER and ULTRASONIC_PACS_PASSWORD for HTTP basic, ULTRASONIC_PACS_TOKEN for a
bearer token.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Mapping

from ultrasonic.errors import ConfigError, MissingExtraError, PacsError

USER, PASSWORD, TOKEN = "ULTRASONIC_PACS_USER", "ULTRASONIC_PACS_PASSWORD", "ULTRASONIC_PACS_TOKEN"
TIMEOUT = 60  # seconds for one request: a large radiograph over a slow link, not a hung server forever
ANY_TRANSFER_SYNTAX = (("application/dicom", "*"),)  # as stored: no transcoding of JPEG 2000 and the like


def connect(url: str, env: Mapping[str, str] = os.environ):
    """A DICOMwebClient for `url` (the DICOMweb root, e.g. Orthanc's .../dicom-web) with the environment's credentials."""
    try:
        import requests
        from dicomweb_client.api import DICOMwebClient
    except ImportError as exc:
        raise MissingExtraError("pacs", "`ultrasonic pacs`", "dicomweb-client") from exc
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--url {url!r} is not an http(s) URL; give the PACS's DICOMweb root, "
                          "e.g. http://127.0.0.1:8042/dicom-web for Orthanc")
    session = requests.Session()
    session.auth, headers = credentials(env)
    session.headers.update(headers)
    return DICOMwebClient(url.rstrip("/"), session=session, timeout=TIMEOUT)


def credentials(env: Mapping[str, str]) -> tuple[tuple[str, str] | None, dict[str, str]]:
    """(basic auth pair or None, extra headers) from the environment; ConfigError for a half-given pair or both kinds."""
    user, password, token = env.get(USER), env.get(PASSWORD), env.get(TOKEN)
    if token and (user or password):
        raise ConfigError(f"both {TOKEN} and {USER}/{PASSWORD} are set; set one kind of credentials")
    if bool(user) != bool(password):
        raise ConfigError(f"{USER} and {PASSWORD} go together (HTTP basic); set both, or neither")
    if token:
        return None, {"Authorization": f"Bearer {token}"}
    return ((user, password) if user else None), {}


@contextlib.contextmanager
def answered(url: str, what: str) -> Iterator[None]:
    """Turns a PACS that is down, refuses us or fails `what` into one PacsError naming the URL and what to do."""
    import requests

    try:
        yield
    except requests.HTTPError as exc:
        raise PacsError(refusal(url, what, exc.response)) from exc
    except requests.ConnectionError as exc:
        raise PacsError(f"{url}: no PACS answers there ({what}: {_reason(exc)}); check --url and that the "
                        "PACS is running") from exc
    except requests.Timeout as exc:
        raise PacsError(f"{url}: the PACS did not answer the {what} within {TIMEOUT} s; try again later") from exc
    except ValueError as exc:  # a body that is not DICOM JSON: not a DICOMweb root
        raise PacsError(f"{url}: the answer to the {what} is not DICOMweb ({exc}); is --url the DICOMweb "
                        "root, e.g. http://127.0.0.1:8042/dicom-web for Orthanc?") from exc


def refusal(url: str, what: str, response) -> str:
    """The line for an HTTP error answer: its status, and for 401/403/404 the likely cause."""
    status = getattr(response, "status_code", "?")
    text = f"{url}: the PACS answered the {what} with HTTP {status} {getattr(response, 'reason', '') or ''}".rstrip()
    if status in (401, 403):
        return f"{text}; it wants credentials: set {USER} and {PASSWORD} (basic) or {TOKEN} (bearer)"
    if status in (400, 404, 405):
        return f"{text}; is --url the DICOMweb root (for Orthanc: http://HOST:8042/dicom-web)?"
    return text


def _reason(exc: Exception) -> str:
    """The innermost cause of a connection error (e.g. 'Connection refused'), not urllib3's whole chain."""
    while exc.__context__ is not None and not isinstance(exc, ConnectionRefusedError):
        exc = exc.__context__
    return getattr(exc, "strerror", None) or type(exc).__name__
