"""``limitry-local serve`` as a real process on 127.0.0.1, and a real HTTP client for it.

Each test starts its own server on a free port with its own ledger file,
waits until it answers, and stops it with SIGTERM (the way a supervisor
does) afterwards, by its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

_FOUND = shutil.which("limitry-local", path=str(Path(sys.executable).parent))
assert _FOUND is not None, "limitry-local is not installed beside this Python: make test"
_COMMAND: str = _FOUND

API_KEY = "sk_local_test"
STARTUP_SECONDS = 30.0


@dataclass
class Server:
    """A running ``limitry-local serve``: its base URL (``.../v1``), process, ledger and log."""

    root: str
    process: subprocess.Popen[bytes]
    db: Path
    log: Path

    @property
    def url(self) -> str:
        return f"{self.root}/v1"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``sig`` and wait for the exit code; a server that hangs is killed and fails."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"the server ignored {sig.name} for {timeout} s:\n{self.output()}"
            ) from None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def running(
    db: Path, *args: str, env: dict[str, str] | None = None, api_key: str | None = API_KEY
) -> Iterator[Server]:
    """``limitry-local serve --db DB --port <free> ARGS`` until the block ends."""
    port = free_port()
    log = db.with_suffix(f".{port}.log")
    command = [_COMMAND, "serve", "--db", str(db), "--port", str(port), "--no-access-log", *args]
    if api_key is not None:
        command += ["--api-key", api_key]
    # The key comes from the arguments or from ``env``, never from the shell running the tests.
    environment = {k: v for k, v in os.environ.items() if k != "LIMITRY_LOCAL_API_KEY"}
    environment.update(env or {})
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=environment)
    server = Server(f"http://127.0.0.1:{port}", process, db, log)
    try:
        _wait_until_up(server)
        yield server
    finally:
        if process.poll() is None:
            server.stop()


def _wait_until_up(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"the server exited at start:\n{server.output()}")
        try:
            if httpx.get(f"{server.root}/openapi.json", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # polling a process's start, not standing in for a clock
    raise AssertionError(f"no answer within {STARTUP_SECONDS} s:\n{server.output()}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A server with API key :data:`API_KEY` on a fresh ledger file."""
    with running(tmp_path / "ledger.db") as started:
        yield started


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    """An HTTP client of ``server``'s API with the right key, as the hosted clients send it."""
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30.0
    ) as http:
        yield http
