"""A Starlette app on a free loopback port in a thread: the shared base of the test doubles
that replay a server's HTTP contract (Keycloak, Kubernetes, MLflow, Langfuse, OPA)."""

from __future__ import annotations

import threading
import time

import uvicorn
from starlette.applications import Starlette


class LocalServer:
    """Runs ``self.app`` on a free loopback port until :meth:`stop`."""

    app: Starlette
    url: str = ""

    def __init__(self) -> None:
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{type(self).__name__} did not start")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
