"""A Keras-style, layer-by-layer model summary, computed by a forward pass with hooks."""

from __future__ import annotations

import torch
from torch import nn


def model_summary(model: nn.Module, input_dim: int) -> str:
    """Each leaf module in call order with its output shape and parameter count, then the total."""
    rows: list[tuple[str, str, str]] = []
    names = {module: name for name, module in model.named_modules()}
    hooks = [
        module.register_forward_hook(
            lambda mod, _inp, out: rows.append((
                f"{names[mod]} ({type(mod).__name__})",
                str((None, *out.shape[1:])),
                f"{sum(p.numel() for p in mod.parameters()):,}",
            ))
        )
        for module in model.modules()
        if not list(module.children())
    ]
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, input_dim, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    total = sum(p.numel() for p in model.parameters())
    width = (max(len(r[0]) for r in rows) + 2, max(16, max(len(r[1]) for r in rows) + 2), 12)
    line = "-" * sum(width)
    header = "Layer (type)".ljust(width[0]) + "Output Shape".ljust(width[1]) + "Param #"
    body = [r[0].ljust(width[0]) + r[1].ljust(width[1]) + r[2] for r in rows]
    return "\n".join([line, header, "=" * sum(width), *body, "=" * sum(width), f"Total params: {total:,}"])
