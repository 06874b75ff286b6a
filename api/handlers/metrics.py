"""GET /metrics: Prometheus metrics (see :mod:`hearth.api.metrics` for the series).

Needs an API key unless the server runs with ``--metrics-public``; the Host check applies
either way. Served at the root, like /health, so scrape configs need no API prefix.
"""

from __future__ import annotations

from hearth.api.handlers.base import BaseHandler


class MetricsHandler(BaseHandler):
    endpoint = "metrics"

    def prepare(self) -> None:
        self.public = self.state.settings.metrics_public
        super().prepare()

    def get(self) -> None:
        body, content_type = self.state.metrics.exposition(self.request.headers.get("Accept"))
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-store")
        self.finish(body)
