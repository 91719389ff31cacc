"""The operations endpoint: ``/metrics`` (Prometheus), ``/healthz`` and ``/status`` (JSON)."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from provider_gateway.ops.health import DEFAULT_UNREACHABLE_AFTER_S, health, status
from provider_gateway.ops.metrics import Metrics

if TYPE_CHECKING:
    from provider_gateway.engine.snapshot import GatewaySnapshot

log = logging.getLogger(__name__)


class Observed(Protocol):
    """What the endpoint reads of a gateway: its metrics and its snapshot."""

    metrics: Metrics

    def snapshot(self) -> GatewaySnapshot: ...


class OpsServer(ThreadingHTTPServer):
    """Serves a gateway's metrics, health and status on ``host:port`` in a daemon thread."""

    daemon_threads = True

    def __init__(
        self,
        gateway: Observed,
        host: str,
        port: int,
        unreachable_after_s: float = DEFAULT_UNREACHABLE_AFTER_S,
    ) -> None:
        super().__init__((host, port), _Handler)
        self.gateway = gateway
        self.unreachable_after_s = unreachable_after_s
        self._thread = threading.Thread(target=self.serve_forever, name="ops-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> OpsServer:
        self._thread.start()
        log.info("metrics, /healthz and /status on port %d", self.port)
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: OpsServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        gateway, limit = self.server.gateway, self.server.unreachable_after_s
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(gateway.metrics.registry))
        elif path == "/healthz":
            report = health(gateway.snapshot(), limit)
            self._json(200 if report["healthy"] else 503, report)
        elif path == "/status":
            self._json(200, status(gateway.snapshot(), limit))
        else:
            self._json(404, {"error": "not found: try /metrics, /healthz or /status"})

    def _json(self, code: int, document: dict[str, Any]) -> None:
        self._send(code, "application/json", json.dumps(document).encode())

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
