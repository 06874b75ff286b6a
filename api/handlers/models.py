"""GET {prefix}/models and GET {prefix}/models/{id}: every GGUF in the models directory."""

from __future__ import annotations

from hearth.api import openai_types
from hearth.api.handlers.base import BaseHandler
from hearth.scheduler import errors
from hearth.scheduler.messages import Placement
from hearth.scheduler.placement import kv_bytes_per_slot
from hearth.tools.registry import ModelEntry


class ModelsHandler(BaseHandler):
    endpoint = "models"

    def _loaded(self) -> dict[str, Placement | None]:
        """The ready models, with where each runs (None: its worker did not say)."""
        status = self.state.bridge.fresh_status()
        if status is None:
            return {}
        return {m.model: m.placement for m in status.models if m.state == "ready"}

    def _model(self, entry: ModelEntry, loaded: dict[str, Placement | None],
               name: str | None = None) -> openai_types.Model:
        """The model object; ``name`` when listed under an alias (then ``alias_of`` says of
        which model)."""
        info = entry.info
        cfg = self.state.settings.worker_config(entry.id, str(entry.path))
        placed = loaded.get(entry.id)
        return openai_types.Model(
            id=name or entry.id, created=entry.created, owned_by="hearth",
            hearth=openai_types.ModelInfo(
                alias_of=entry.id if name and name != entry.id else None,
                loaded=entry.id in loaded, size_bytes=entry.size,
                architecture=info.architecture if info else None,
                parameters=(info.parameter_count or None) if info else None,
                quantization=info.file_type_name if info else None,
                context_length=info.context_length if info else None,
                error=entry.error,
                kv_cache_type_k=cfg.cache_type_k, kv_cache_type_v=cfg.cache_type_v,
                kv_bytes_per_slot=kv_bytes_per_slot(info, cfg.n_ctx_slot, cfg.cache_type_k,
                                                    cfg.cache_type_v),
                device=placed.device if placed else None,
                gpu_layers=placed.gpu_layers if placed else None,
                layers=placed.layers if placed else None))

    def get(self, model_id: str | None = None) -> None:
        loaded = self._loaded()
        registry = self.state.registry
        if model_id is None:
            entries = registry.scan()
            models = [self._model(e, loaded) for e in entries.values()]
            models += [self._model(entries[target], loaded, alias)
                       for alias, target in sorted(registry.aliases.items())
                       if target in entries and alias not in entries]
            self.write_json(openai_types.ModelList(models))
            return
        entry = registry.resolve(model_id)
        if entry is None:
            raise errors.ModelNotFound.named(model_id)
        self.model_label = entry.id
        self.write_json(self._model(entry, loaded, model_id))
