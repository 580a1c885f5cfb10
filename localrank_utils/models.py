"""Multilayer perceptrons that expose their pre-activations p_1, ..., p_L."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "leaky_relu": lambda p: nn.functional.leaky_relu(p, negative_slope=0.1),
    "gelu": nn.functional.gelu,
    "identity": lambda p: p,
}


class MLP(nn.Module):
    """``widths = (n_0, n_1, ..., n_L)``; the activation follows every layer but the last.

    ``hidden_layers`` in the chapters counts the 200-wide layers, so the paper's MNIST
    "4-layer" net is ``MLP((784, 200, 200, 200, 200, 10))`` with five pre-activations.
    """

    def __init__(self, widths: Sequence[int], activation: str = "relu", seed: int | None = None) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise ValueError(f"widths={widths!r} must list at least an input and an output width, all >= 1.")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is unknown; choose one of {sorted(ACTIVATIONS)}.")
        self.widths = widths
        self.activation_name = activation
        self.activation = ACTIVATIONS[activation]
        if seed is not None:
            # A private generator keeps initialisation independent of any global RNG use before it.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        else:
            self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    @classmethod
    def with_hidden(cls, n_in: int, width: int, hidden_layers: int, n_out: int, **kwargs) -> "MLP":
        """An MLP with ``hidden_layers`` hidden layers of equal ``width``."""
        if hidden_layers < 0 or width < 1:
            raise ValueError(f"hidden_layers={hidden_layers!r} must be >= 0 and width={width!r} >= 1.")
        return cls((n_in, *([width] * hidden_layers), n_out), **kwargs)

    def preactivations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[p_1(x), ..., p_L(x)] for a batch ``x`` of shape (B, n_0)."""
        if x.ndim != 2 or x.shape[1] != self.widths[0]:
            raise ValueError(f"input of shape {tuple(x.shape)} does not fit this MLP: expected (batch, {self.widths[0]}).")
        out = []
        h = x
        for i, layer in enumerate(self.layers):
            p = layer(h)
            out.append(p)
            if i < len(self.layers) - 1:
                h = self.activation(p)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.preactivations(x)[-1]
