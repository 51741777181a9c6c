"""RequestGuard: the bearer token and the upload size, checked before a request body is read.

A plain ASGI middleware rather than FastAPI dependencies, because FastAPI
parses (and spools to disk) a whole multipart body before any dependency
runs: a stranger could make the service receive 32 MB before being told
they have no token.
"""

from __future__ import annotations

import hmac
import json
from typing import Awaitable, Callable

Scope = dict
Message = dict
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Room for the multipart framing around the file: boundaries, part headers, the file name.
MULTIPART_SLACK = 64 * 1024


class RequestGuard:
    """401 for a missing or wrong token on `protected` paths; 413 for a body over `max_bytes`."""

    def __init__(self, app, *, token: str | None, protected: tuple[str, ...], max_bytes: int):
        self.app = app
        self.token = token
        self.protected = protected
        self.max_body = max_bytes + MULTIPART_SLACK
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.token and scope["path"].startswith(self.protected) and not self._authorised(scope):
            return await send_json(send, 401, "missing or wrong access token: send the header "
                                   "'Authorization: Bearer <token>' with the token the service was started with",
                                   [(b"www-authenticate", b"Bearer")])
        if scope["method"] in ("POST", "PUT", "PATCH"):
            length = _header(scope, b"content-length")
            if length is None:
                # Chunked upload: read it here, in chunks, and stop at the limit.
                body = await _read_at_most(receive, self.max_body)
                if body is None:
                    return await send_json(send, 413, self._too_large())
                receive = _replay(body, receive)
            elif not length.isdigit():
                return await send_json(send, 400, f"Content-Length {length!r} is not a number")
            elif int(length) > self.max_body:
                return await send_json(send, 413, self._too_large())
        await self.app(scope, receive, send)

    def _authorised(self, scope: Scope) -> bool:
        given = _header(scope, b"authorization") or ""
        scheme, _, credentials = given.partition(" ")
        # compare_digest: the time taken does not reveal how much of the token was right.
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), self.token.encode())

    def _too_large(self) -> str:
        return too_large_message(self.max_bytes)


def too_large_message(max_bytes: int) -> str:
    return (f"upload is larger than the limit of {max_bytes / 2**20:g} MB; send a smaller image, "
            "or restart the service with a larger --max-upload-mb")


async def send_json(send: Send, status: int, detail: str, headers: list | None = None) -> None:
    """A complete JSON error response {"detail": ...}, the same shape FastAPI gives."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _read_at_most(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it passes `limit` bytes."""
    chunks, total = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that hands the app the body already read, then waits on the real one (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
