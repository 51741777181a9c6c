"""`ultrasonic serve` as a child process on this machine: for tests, benchmarks and notebooks.

    with LocalServer("runs/cxr", "serve.log") as server:
        httpx.post(server.url + "/predict", files={"file": open("scan.jpeg", "rb")})

It starts `python -m ultrasonic.cli serve RUN_DIR` on 127.0.0.1 and a free
port, writes the server's output to a log file, waits for /health, and stops
it with SIGTERM (uvicorn shuts down cleanly), killing it if it hangs.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from ultrasonic.errors import MissingExtraError, ServerStartError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    def __init__(self, run_dir: str | os.PathLike, log_path: str | os.PathLike, *args: str,
                 start_timeout: float = 120.0):
        if importlib.util.find_spec("httpx") is None:  # it asks /health with httpx
            raise MissingExtraError("dev", "LocalServer", "httpx")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        command = [sys.executable, "-m", "ultrasonic.cli", "serve", str(run_dir), "--host", "127.0.0.1",
                   "--port", str(self.port), *args]
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._wait_until_healthy(start_timeout)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_until_healthy(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._log.close()
                raise ServerStartError(f"the server exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.stop()
        raise ServerStartError(f"the server did not answer /health within {timeout:.0f} s:\n{self.log()[-3000:]}")

    def rss_mb(self, field_name: str = "VmRSS") -> float:
        """The server process's resident memory (or another /proc status field) in MB; NaN once it has exited."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024  # kB
        except OSError:
            pass
        return float("nan")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        """Stop the server (if it still runs) and return its exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode
