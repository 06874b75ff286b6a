"""GET {prefix}/models and GET {prefix}/models/{id}: every GGUF in the models directory, and
every model a remote worker serves (``hearth worker --join``): the union, each with where it
is loaded (``hearth.workers``)."""

from __future__ import annotations

from hearth.api import openai_types
from hearth.api.handlers.base import BaseHandler
from hearth.scheduler import errors
from hearth.scheduler.messages import ModelState
from hearth.scheduler.placement import kv_bytes_per_slot
from hearth.tools.registry import ModelEntry


class ModelsHandler(BaseHandler):
    endpoint = "models"

    def _loaded(self) -> dict[str, ModelState]:
        """The models loaded now (on this machine or a remote worker), by id."""
        status = self.state.bridge.fresh_status()
        if status is None:
            return {}
        return {m.model: m for m in status.models if m.state == "ready"}

    @staticmethod
    def _remote_only(state: ModelState) -> openai_types.Model:
        """A model served by remote workers only: no file here, so no header facts."""
        return openai_types.Model(
            id=state.model, created=0, owned_by="hearth",
            hearth=openai_types.ModelInfo(loaded=True, size_bytes=state.size_bytes,
                                          workers=state.workers))

    def _model(self, entry: ModelEntry, loaded: dict[str, ModelState],
               name: str | None = None) -> openai_types.Model:
        """The model object; ``name`` when listed under an alias (then ``alias_of`` says of
        which model)."""
        info = entry.info
        cfg = self.state.settings.worker_config(entry.id, str(entry.path))
        state = loaded.get(entry.id)
        placed = state.placement if state else None
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
                workers=state.workers if state else [],
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
            models += [self._remote_only(state) for model, state in sorted(loaded.items())
                       if model not in entries and model not in registry.aliases
                       and _on_remote(state)]
            self.write_json(openai_types.ModelList(models))
            return
        entry = registry.resolve(model_id)
        if entry is None and model_id in loaded and _on_remote(loaded[model_id]):
            self.model_label = model_id
            self.write_json(self._remote_only(loaded[model_id]))
            return
        if entry is None:
            raise errors.ModelNotFound.named(model_id)
        self.model_label = entry.id
        self.write_json(self._model(entry, loaded, model_id))


def _on_remote(state: ModelState) -> bool:
    """Whether a remote worker serves the model (a model whose file left the models
    directory may still be loaded here; it is not listed for that)."""
    return any(w != "local" for w in state.workers)
