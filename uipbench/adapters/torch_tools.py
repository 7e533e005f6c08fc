"""Small torch helpers shared by the adapters (imported only inside a backbone environment)."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import torch


@contextlib.contextmanager
def default_dtype(dtype: "torch.dtype") -> Iterator[None]:
    """torch's default dtype set to ``dtype`` inside the block only (restored on error too).

    Needed where a package creates tensors or constants at build or run time in the
    default dtype (e3nn's constants in SevenNet, ORB's radial basis).
    """
    import torch

    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def frozen_float64(model: "torch.nn.Module") -> "torch.nn.Module":
    """``model`` in float64, eval mode, parameters excluded from autograd.

    Gradients still flow to the inputs (positions), which is what the Δ-model's forces need.
    """
    import torch

    model = model.to(torch.float64).eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model
