"""GET /health (no key): 200 once the scheduler is alive and the default model can serve.

The body also says how busy the server is (slots busy/total over loaded models, queued
requests) — counts only, nothing about who is asking.
"""

from __future__ import annotations

from typing import Any

from hearth.api.handlers.base import BaseHandler


class HealthHandler(BaseHandler):
    public = True
    endpoint = "health"

    def get(self) -> None:
        status = self.state.bridge.fresh_status()
        if status is None:
            self.write_json({"status": "unavailable", "reason": "the scheduler is not running"},
                            503)
            return
        default = next((m for m in status.models if m.model == status.default_model), None)
        body: dict[str, Any] = {
            "model": status.default_model,
            "slots": {"busy": sum(m.busy for m in status.models),
                      "total": sum(m.slots for m in status.models)},
            "queued": status.queued,
        }
        if default is not None and default.state in ("ready", "stopped"):
            # stopped: unloaded to make room for another model; it loads again on demand
            self.write_json({"status": "ok", "loaded": default.state == "ready", **body})
        elif default is not None and default.state == "failed":
            self.write_json({"status": "error", "reason": f"the default model "
                             f"'{default.model}' failed to load: {default.message}", **body}, 503)
        else:
            self.write_json({"status": "loading", "reason": f"the default model "
                             f"'{status.default_model}' is loading", **body}, 503)
