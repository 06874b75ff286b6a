"""GET /health (no key): 200 once the scheduler is alive and the default model can serve."""

from __future__ import annotations

from hearth.api.handlers.base import BaseHandler


class HealthHandler(BaseHandler):
    public = True

    def get(self) -> None:
        status = self.state.bridge.fresh_status()
        if status is None:
            self.write_json({"status": "unavailable", "reason": "the scheduler is not running"},
                            503)
            return
        default = next((m for m in status.models if m.model == status.default_model), None)
        if default is not None and default.state == "ready":
            self.write_json({"status": "ok", "model": default.model})
        elif default is not None and default.state == "failed":
            self.write_json({"status": "error", "reason": f"the default model "
                             f"'{default.model}' failed to load: {default.message}"}, 503)
        else:
            self.write_json({"status": "loading",
                             "reason": f"the default model '{status.default_model}' is loading"},
                            503)
