"""Forward hooks on decoder layers: per-row adapter deltas and per-layer hidden-state overwrite.

Hooks are installed once per base model and do nothing unless a forward sets their context, so the
plain model's outputs are unchanged when no adapter prompt is in the batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from softprompt.errors import InputError
from softprompt.model.arch import family, site_module

SITES = ("attn", "mlp")


class AdapterHost:
    """Adds adapter(h) to the output of each layer's attention and MLP, per row of the batch.

    `routes` is a list of (row_index or None for all rows, adapter) set for the duration of a forward;
    an adapter exposes `delta(layer: int, site: str, h: Tensor[b,T,H]) -> Tensor[b,T,H]`.
    """

    def __init__(self, layers: nn.ModuleList):
        self.routes: list[tuple[torch.Tensor | None, Any]] = []
        self.batch_shape: tuple[int, int] | None = None  # (B, T) of the layer input being run
        self.handles = []
        for i, layer in enumerate(layers):
            self.handles.append(layer.register_forward_pre_hook(self._record_shape, with_kwargs=True))
            for site in SITES:
                self.handles.append(site_module(layer, site).register_forward_hook(self._hook(i, site)))

    def _record_shape(self, _mod, args, kwargs):
        if self.routes:
            self.batch_shape = tuple((args[0] if args else kwargs["hidden_states"]).shape[:2])

    def _hook(self, layer_idx: int, site: str):
        def hook(_mod, _args, out):
            if not self.routes:
                return None
            h = out[0] if isinstance(out, tuple) else out  # [B,T,H], or [B*T,H] (OPT flattens before its fc2)
            flat = h.dim() == 2
            if flat:
                h = h.view(*self.batch_shape, h.shape[-1])  # [B,T,H]
            for rows, adapter in self.routes:
                if rows is None:
                    h = h + adapter.delta(layer_idx, site, h)
                else:
                    h = h.index_add(0, rows, adapter.delta(layer_idx, site, h.index_select(0, rows)))
            if flat:
                h = h.reshape(-1, h.shape[-1])  # back to [B*T,H]
            return (h, *out[1:]) if isinstance(out, tuple) else h

        return hook

    @contextlib.contextmanager
    def active(self, routes: list[tuple[torch.Tensor | None, Any]]) -> Iterator[None]:
        old, self.routes = self.routes, routes
        try:
            yield
        finally:
            self.routes = old


def require_uniform_width(base: Any, what: str) -> None:
    """Refuse `what` (a method acting on decoder layers) where layers and embeddings differ in width."""
    width = getattr(base.model.config.get_text_config(), "hidden_size", None) or base.facts.hidden_size
    if width != base.facts.hidden_size:
        raise InputError(
            f"{what} on {family(base.model)}: its decoder layers are {width} wide but its embeddings "
            f"{base.facts.hidden_size} (a projection sits between them, like OPT's word_embed_proj_dim); "
            "use prompt tuning, P-tuning, a hybrid template or prefix tuning, which act on embeddings or K/V"
        )


def adapter_host(base: Any) -> AdapterHost:
    """The base's one AdapterHost (hooks installed on first use)."""
    host = getattr(base, "_adapter_host", None)
    if host is None:
        require_uniform_width(base, "adapters")
        host = AdapterHost(base.layers)
        base._adapter_host = host
    return host


@contextlib.contextmanager
def overwrite_layer_inputs(layers: nn.ModuleList, states: list[torch.Tensor | None]) -> Iterator[None]:
    """Replace the first n positions of layer l's input hidden states with states[l] ([n,H] or None)."""

    def make(s: torch.Tensor):
        def pre(_mod, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            if h.shape[-1] != s.shape[-1]:
                raise InputError(f"layer input states are {s.shape[-1]} wide but this model's decoder layers "
                                 f"take {h.shape[-1]}: deep prompt tuning needs layers as wide as the embeddings")
            n = s.shape[0]
            h = torch.cat([s.to(h.dtype).unsqueeze(0).expand(h.shape[0], -1, -1), h[:, n:]], dim=1)
            if args:
                return (h, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": h}

        return pre

    handles = [layer.register_forward_pre_hook(make(s), with_kwargs=True)
               for layer, s in zip(layers, states) if s is not None]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def capture_layer_inputs(base: Any, ids: torch.Tensor) -> list[torch.Tensor]:
    """Hidden states entering each decoder layer for one token sequence ids [n] -> L tensors [n,H]."""
    require_uniform_width(base, "deep prompt tuning")
    seen: list[torch.Tensor] = []

    def pre(_mod, args, kwargs):
        seen.append((args[0] if args else kwargs["hidden_states"])[0].detach().clone())

    handles = [layer.register_forward_pre_hook(pre, with_kwargs=True) for layer in base.layers]
    try:
        base.backbone(input_ids=ids[None].to(base.device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return seen
