"""JsonH11Protocol: uvicorn's HTTP/1.1 protocol (h11) with JSON 400s and deadlines for slow clients.

JSON 400s. A request h11 cannot parse (`Content-Length: abc`, a bad request line, a header without a
colon) never reaches the app: uvicorn answers it itself, in text/plain. Clients that read `detail` from
every error would fail on that one; this subclass changes only the body and its type.

Deadlines. uvicorn closes a connection only when it is idle after a response (timeout_keep_alive);
a client that opens a connection and trickles its headers at 2 bytes/s, or declares 30 MB and sends
nothing, holds a connection (and a file descriptor, and a task) for ever. So, per connection, on the
event loop (loop.call_later, no thread):
  - the request line and headers must be complete within `header_s` of the connection opening (or of
    the previous response on a kept-alive connection), else the connection is closed without an answer;
  - the body gets `body_grace_s`, then it must keep up with `min_body_rate` bytes/s on average:
    received >= min_body_rate x (seconds since the headers - body_grace_s). A body of L bytes therefore
    has body_grace_s + L / min_body_rate seconds (32 MB at 10 KB/s: 10 s + 55 min). Behind, it gets 408
    JSON {"detail": ...} (when no answer was started yet) and the connection is closed.
Time during which the server itself stopped reading (uvicorn pauses a connection whose 64 KB buffer the
app has not taken yet) is not counted against the client. 0 turns a deadline off.

    uvicorn.run(app, http=protocol_for(Deadlines(header_s=10, body_grace_s=10, min_body_rate=10240)))
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("ultrasonic")

DETAIL = ("malformed HTTP request: the request line or a header (Content-Length, Transfer-Encoding, ...) "
          "is not valid HTTP/1.1; check what the client sends")
CHECK_S = 0.5  # how often a body's rate is checked once its grace period is over


@dataclass(frozen=True)
class Deadlines:
    """The slow-client limits of one server (ServeSettings' header_timeout_s, body_timeout_s, min_body_rate)."""

    header_s: float = 10.0
    body_grace_s: float = 10.0
    min_body_rate: float = 10 * 1024


@dataclass
class _Body:
    """How far one request body has come: since when, how many bytes, how long we did not read."""

    start: float
    received: int = 0
    paused_s: float = 0.0
    last_check: float = 0.0


def protocol_for(deadlines: Deadlines) -> type[JsonH11Protocol]:
    """The protocol class to give uvicorn (`http=`) for these deadlines: uvicorn makes one per connection."""
    return type("JsonH11Protocol", (JsonH11Protocol,), {"deadlines": deadlines})


class JsonH11Protocol(H11Protocol):
    deadlines = Deadlines()

    def connection_made(self, transport) -> None:
        self._header_timer = self._body_timer = None
        self._body: _Body | None = None
        super().connection_made(transport)
        self._follow_state()

    def data_received(self, data: bytes) -> None:
        if self._body is not None:
            self._body.received += len(data)
        super().data_received(data)
        self._follow_state()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_state()  # a kept-alive connection now waits for the next request's headers

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel(header=True, body=True)
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._send_json(400, b"Bad Request", DETAIL)
        self.transport.close()

    # --- the deadlines ---------------------------------------------------------------------------------

    def _follow_state(self) -> None:
        """Arm or cancel the timers for where the client is: before its headers, in its body, or done."""
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            if self._header_timer is None and self.deadlines.header_s > 0:
                self._header_timer = self.loop.call_later(self.deadlines.header_s, self._headers_late)
        elif state is h11.SEND_BODY:
            self._cancel(header=True)
            if self._body is None and self.deadlines.min_body_rate > 0:
                now = self.loop.time()
                self._body = _Body(start=now, last_check=now)
                self._body_timer = self.loop.call_later(max(self.deadlines.body_grace_s, CHECK_S), self._check_body)
        else:  # the request is complete (or the connection is over): the app's time is not the client's
            self._cancel(header=True, body=True)

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.info("closed a connection from %s: no complete request headers within %g s (--header-timeout)",
                     _peer(self.client), self.deadlines.header_s)
            self.transport.close()

    def _check_body(self) -> None:
        self._body_timer = None
        body = self._body
        if body is None or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:  # we stopped reading, not the client: that time is not held against it
            body.paused_s += now - body.last_check
        body.last_check = now
        owed = self.deadlines.min_body_rate * (now - body.start - body.paused_s - self.deadlines.body_grace_s)
        if body.received >= owed:
            self._body_timer = self.loop.call_later(CHECK_S, self._check_body)
            return
        rate = body.received / max(now - body.start, 1e-9)
        log.info("dropped a request from %s: its body came at %.0f bytes/s, under the minimum of %g "
                 "(--min-body-rate)", _peer(self.client), rate, self.deadlines.min_body_rate)
        self._answer_408(rate)

    def _answer_408(self, rate: float) -> None:
        """408 JSON when the app has not answered yet, then close; the app sees a disconnect."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            cycle.response_started = True  # the app's own answer, if any, is dropped (it reads a disconnect)
            cycle.disconnected = True
            cycle.keep_alive = False
            self._send_json(408, b"Request Timeout",
                            f"the request body arrived at {rate:.0f} bytes/s, slower than the minimum of "
                            f"{self.deadlines.min_body_rate:g} bytes/s the service accepts after "
                            f"{self.deadlines.body_grace_s:g} s; send it again on a faster link")
            cycle.message_event.set()
        self.transport.close()

    def _send_json(self, status: int, reason: bytes, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        try:
            for event in (h11.Response(status_code=status, headers=headers, reason=reason), h11.Data(data=body),
                          h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
        except h11.LocalProtocolError:  # h11 cannot answer in this state: closing is all that is left
            pass

    def _cancel(self, header: bool = False, body: bool = False) -> None:
        if header and self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if body:
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None
            self._body = None


def _peer(client) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"
