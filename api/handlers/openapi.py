"""GET {prefix}/openapi.json: the API described from the OpenAI types (api/openapi.py)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from hearth.api import openapi
from hearth.api.handlers.base import BaseHandler


class OpenApiHandler(BaseHandler):
    endpoint = "openapi"

    def get(self) -> None:
        try:
            ver = version("hearth")
        except PackageNotFoundError:
            ver = "0"
        settings = self.state.settings
        slots = max([settings.parallel, *(m.parallel or 0 for m in settings.models.values())])
        most = min(settings.max_n, slots, settings.max_per_key or slots)  # (the scheduler's)
        doc = openapi.build(settings.api_prefix, ver, most)
        if self.state.settings.web:
            doc["paths"].update(openapi.web_paths())
        self.write_json(doc)
