"""The ASGI middleware in a real uvicorn process, stopped the way a supervisor stops it.

uvicorn shuts down gracefully on SIGTERM, then re-raises the signal, so the
process ends by it, past interpreter exit and the ledger's finalizer.  A
batched Tracker's open batch is committed by the middleware at the lifespan's
shutdown; for an app that does not speak lifespan the middleware answers it.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from limitry_local import Tracker
from limitry_local.integrations.asgi import LimitryMiddleware, Message, Receive, Scope, Send
from tests.server.conftest import free_port

APPS = {
    # A Starlette app: it speaks lifespan, and never closes the Tracker itself.
    "starlette": """
        from starlette.applications import Starlette
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route

        async def hello(request):
            return PlainTextResponse("ok")

        inner = Starlette(routes=[Route("/", hello)])
    """,
    # A bare ASGI app that does not speak lifespan (it raises, as the protocol says to).
    "bare": """
        async def inner(scope, receive, send):
            assert scope["type"] == "http", "no lifespan here"
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
    """,
    # One that ignores lifespan without raising: it returns, and uvicorn serves on.
    "bare, returns": """
        async def inner(scope, receive, send):
            if scope["type"] != "http":
                return
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
    """,
}

WRAPPED = """
    import sys
    from limitry_local import Tracker
    from limitry_local.integrations.asgi import LimitryMiddleware

    # A batch that would wait ten minutes: only the shutdown can commit it.
    tracker = Tracker(sys.argv[-1], durability="batched", flush_ms=600_000)
    app = LimitryMiddleware(
        inner, tracker=tracker, event=lambda scope: {"customerId": "c", "eventType": "http"}
    )
"""

RUN = (
    "import sys, uvicorn; sys.path.insert(0, sys.argv[1]); "
    "uvicorn.run('app:app', port=int(sys.argv[2]), log_level='info')"
)


def _committed(db: Path) -> int:
    with sqlite3.connect(db, timeout=10) as conn:
        count: int = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    return count


@pytest.mark.parametrize("kind", sorted(APPS))
def test_sigterm_commits_a_batched_trackers_open_batch(tmp_path: Path, kind: str) -> None:
    """Found in review: the batch of a Tracker behind the middleware was lost on SIGTERM
    (20 of 20 acknowledged requests), since uvicorn ends by the signal it caught."""
    (tmp_path / "app.py").write_text(textwrap.dedent(APPS[kind]) + textwrap.dedent(WRAPPED))
    db = tmp_path / "usage.db"
    port = free_port()
    log = tmp_path / "uvicorn.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-c", RUN, str(tmp_path), str(port), str(db)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, log.read_text()
            try:
                first = httpx.get(f"http://127.0.0.1:{port}/", timeout=1.0)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)  # polling a process's start
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            answers = [first] + [client.get("/") for _ in range(19)]
        assert [answer.status_code for answer in answers] == [200] * 20
        assert _committed(db) == 0  # acknowledged, still in the open batch
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) in (0, -signal.SIGTERM), log.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert "Application shutdown complete" in log.read_text()
    assert _committed(db) == 20, log.read_text()


# --- the lifespan protocol, driven message by message -------------------------------------


async def _bare(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http", "no lifespan here"


async def _returns_at_once(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":  # a bare app that ignores lifespan, without raising
        return


async def _returns_unanswered(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()  # the startup, never answered: uvicorn serves on all the same


async def _fails_its_shutdown(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "lifespan.startup.complete"})
    await receive()
    raise RuntimeError("the app's shutdown broke")


async def _returns_after_startup(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "lifespan.startup.complete"})


async def _fails_its_startup(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    raise RuntimeError("database unreachable")


async def _hangs_its_shutdown(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "lifespan.startup.complete"})
    await receive()
    await asyncio.Event().wait()  # a pool that never drains: the server is killed


async def _is_cancelled_while_running(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "lifespan.startup.complete"})
    await asyncio.Event().wait()  # cancelled before any shutdown is asked for


# The apps whose lifespan ends without an exception.
ENDS_CLEANLY = {
    "bare",
    "returns after startup",
    "returns at once",
    "returns its startup unanswered",
}

LIFESPAN_APPS: dict[str, Any] = {
    "bare": _bare,
    "bare, cancelled while running": _bare,  # the middleware waits for the shutdown
    "returns at once": _returns_at_once,
    "returns its startup unanswered": _returns_unanswered,
    "fails its shutdown": _fails_its_shutdown,
    "hangs its shutdown": _hangs_its_shutdown,
    "is cancelled while running": _is_cancelled_while_running,
    "returns after startup": _returns_after_startup,
    "fails its startup": _fails_its_startup,
}


@pytest.mark.parametrize("kind", sorted(LIFESPAN_APPS))
def test_the_batch_is_committed_at_shutdown_whatever_the_app_does(
    tmp_path: Path, kind: str
) -> None:
    """Found in review of the lifespan commit: an app that raised in its shutdown, or
    returned after its startup, left the batch open; an app that failed its startup
    was answered "started" as if it spoke no lifespan.  And in review of that fix: a
    shutdown that hangs (the server is then killed) and a cancelled lifespan task
    committed nothing."""
    db = tmp_path / "usage.db"
    tracker = Tracker(db, durability="batched", flush_ms=600_000)
    tracker.usage(customer_id="c", event_type="http")
    app = LimitryMiddleware(LIFESPAN_APPS[kind], tracker=tracker, event=lambda scope: None)
    server: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    answers: list[str] = []

    async def send(message: Message) -> None:
        answers.append(message["type"])

    async def lifespan() -> BaseException | None:
        await server.put({"type": "lifespan.startup"})
        running = asyncio.ensure_future(app({"type": "lifespan"}, server.get, send))
        await asyncio.sleep(0.05)  # as a server runs while the app lives
        assert _committed(db) == 0  # still the open batch
        if "cancelled" in kind:
            running.cancel()
        else:
            await server.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(running, 1 if kind == "hangs its shutdown" else 5)
        except (RuntimeError, TimeoutError, asyncio.CancelledError) as failed:
            return failed
        return None

    failed = asyncio.run(lifespan())
    if kind == "fails its startup":  # its failure stands, said for it: the server stops
        assert (answers, str(failed)) == (["lifespan.startup.failed"], "database unreachable")
        tracker.close()
        return
    assert answers[0] == "lifespan.startup.complete"
    assert _committed(db) == 1
    assert (failed is not None) == (kind not in ENDS_CLEANLY)
    assert len(answers) == len(set(answers))  # nothing said twice
    tracker.close()
