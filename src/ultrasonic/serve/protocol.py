"""JsonH11Protocol: uvicorn's HTTP/1.1 protocol (h11) whose own 400s are JSON {"detail": ...} like every
other error of the service.

A request h11 cannot parse (`Content-Length: abc`, a bad request line, a header without a colon) never
reaches the app: uvicorn answers it itself, in text/plain. Clients that read `detail` from every error
would fail on that one; this subclass changes only the body and its type.
"""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

DETAIL = ("malformed HTTP request: the request line or a header (Content-Length, Transfer-Encoding, ...) "
          "is not valid HTTP/1.1; check what the client sends")


class JsonH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"detail": DETAIL}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                      h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()
