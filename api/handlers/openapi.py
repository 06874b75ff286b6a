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
        doc = openapi.build(self.state.settings.api_prefix, ver)
        if self.state.settings.web:
            doc["paths"].update(openapi.web_paths())
        self.write_json(doc)
