"""Runs the web app (uvicorn) and the device-status watcher beside the subscriber in `smearscope serve`."""

from __future__ import annotations

import logging
import threading
import time

from server.config import ServerConfig
from server.store import Store
from server.web.db import Database
from server.web.status import StatusWatcher

log = logging.getLogger(__name__)


def configure_access_log(path: str | None) -> None:
    """The access log (no patient identifiers: route patterns only) to its own file when configured."""
    logger = logging.getLogger("smearscope.web.access")
    logger.setLevel(logging.INFO)
    if path:
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


class WebServer:
    """uvicorn on its own thread, with its own database connection; `watch_status` adds the MQTT
    status subscription."""

    def __init__(self, config: ServerConfig, watch_status: bool = True, model_path: str | None = None) -> None:
        import uvicorn

        from server.web.app import create_app

        self.config = config
        self.db = Database(Store(config.database_url()))
        configure_access_log(str(config.base_dir / config.web.access_log) if config.web.access_log else None)
        app = create_app(config, self.db, model_path)
        self.server = uvicorn.Server(uvicorn.Config(app, host=config.web.host, port=config.web.port, log_config=None,
                                                    access_log=False, proxy_headers=True, server_header=False))
        self.watcher = StatusWatcher(config, self.db) if watch_status else None
        self._thread = threading.Thread(target=self.server.run, name="web", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.config.web.host}:{self.config.web.port}"

    def start(self, timeout_s: float = 15.0) -> None:
        if self.watcher:
            self.watcher.start()
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"web app did not start on {self.url} (address in use?)")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        if self.watcher:
            self.watcher.stop()
        self.db.close()
