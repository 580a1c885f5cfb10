"""Parameter profiles of the chapters (quick / book / paper) and their validation.

A chapter's ``parameters`` cell sets ``profile`` and leaves every other value at ``None``;
``resolve`` fills each ``None`` from the profile, so ``papermill ... -p steps 5000`` overrides
one value and ``-p profile quick`` switches the rest.  ``profile = None`` reads the
environment variable ``LOCALRANK_PROFILE`` (the test suite sets ``quick``), else ``book``.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from typing import Any

from .devices import DEVICE_CHOICES
from .models import ACTIVATIONS
from .train import OPTIMIZERS

PROFILE_NAMES = ("quick", "book", "paper")

# name -> (kind, lower, upper); bounds inclusive, None = unbounded.
_SPECS: dict[str, tuple[str, Any, Any]] = {
    "seed": ("int", 0, None),
    "steps": ("int", 1, None),
    "batch_size": ("int", 1, None),
    "n_train": ("int", 1, 60_000),
    "n_test": ("int", 1, 10_000),
    "n_rank_points": ("int", 2, 10_000),
    "n_checkpoints": ("int", 2, 1000),
    "hidden_layers": ("int", 1, 50),
    "width": ("int", 1, 100_000),
    "dim_x": ("int", 1, 100_000),
    "dim_y": ("int", 1, 100_000),
    "lr": ("float", 0.0, None),
    "weight_decay": ("nonneg", 0.0, None),
    "epsilon": ("float", 0.0, None),
    "max_correlation": ("float", 0.0, 1.0),
    "epsilon_grid": ("floats", 0.0, None),
    "compare_weight_decays": ("nonnegs", 0.0, None),
    "optimizer": ("choice", OPTIMIZERS, None),
    "activation": ("choice", tuple(ACTIVATIONS), None),
    "device": ("choice", DEVICE_CHOICES, None),
    # β sweeps (deep_vib_gaussian, deep_vib_mnist)
    "beta_min": ("float", 0.0, None),
    "beta_max": ("float", 0.0, None),
    "n_betas": ("int", 2, 10_000),
    "n_seeds": ("int", 1, 100),
    "bottleneck_dim": ("int", 1, 100_000),
    "n_decoder_samples": ("int", 1, 10_000),
}

# The settings the paper states (Adam, lr 1e-4, widths) plus, where it is silent, the first author's
# public measurement code (AdamW with weight decay 0.01, batch 64, 1 000 training points, 128 LR points).
_SYNTHETIC = dict(dim_x=100, dim_y=2, max_correlation=0.9, hidden_layers=3, width=200, activation="relu",
                  n_train=1000, n_test=2000, batch_size=64, lr=1e-4, optimizer="adamw", weight_decay=0.01,
                  epsilon=0.01, n_rank_points=128, seed=0, device="auto")
_MNIST = dict(hidden_layers=4, width=200, activation="relu", n_train=1000, n_test=10_000, batch_size=64, lr=1e-4,
              optimizer="adamw", weight_decay=0.01, epsilon=0.01, n_rank_points=128, seed=0, device="auto")
_COMPARE = (0.0, 0.1, 1.0)

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "index": {name: dict(device="auto") for name in PROFILE_NAMES},
    "local_rank": {
        "quick": dict(hidden_layers=4, width=200, n_train=1000, steps=300, lr=1e-3, n_rank_points=32, seed=0,
                      device="auto", epsilon=0.01, epsilon_grid=(1e-4, 1e-3, 1e-2, 1e-1, 1.0)),
        "book": dict(hidden_layers=4, width=200, n_train=1000, steps=3000, lr=1e-3, n_rank_points=128, seed=0,
                     device="auto", epsilon=0.01, epsilon_grid=tuple(10.0 ** (k / 4) for k in range(-20, 5))),
        "paper": dict(hidden_layers=4, width=200, n_train=1000, steps=30_000, lr=1e-4, n_rank_points=1000, seed=0,
                      device="auto", epsilon=0.01, epsilon_grid=tuple(10.0 ** (k / 8) for k in range(-40, 9))),
    },
    "synthetic_gaussian": {
        "quick": _SYNTHETIC | dict(steps=2000, n_checkpoints=12, n_rank_points=32, compare_weight_decays=(1.0,)),
        "book": _SYNTHETIC | dict(steps=30_000, n_checkpoints=30, compare_weight_decays=_COMPARE),
        "paper": _SYNTHETIC | dict(steps=1_000_000, n_checkpoints=50, compare_weight_decays=_COMPARE),
    },
    "mnist": {
        "quick": _MNIST | dict(steps=1500, n_test=2000, n_checkpoints=12, n_rank_points=32,
                               compare_weight_decays=(1.0,)),
        "book": _MNIST | dict(steps=30_000, n_checkpoints=30, compare_weight_decays=_COMPARE),
        "paper": _MNIST | dict(steps=1_000_000, n_checkpoints=50, compare_weight_decays=_COMPARE),
    },
}

# Deep VIB classifier (Alemi et al. 2016).  book: CPU-sized (784-256-256-K, K = 32, 5 000 images, 20 epochs,
# Adam 1e-3); paper: Alemi's 784-1024-1024-2K, K = 256, all 60 000 images, 200 epochs at batch 100, Adam
# 1e-4, for a GPU.  β_VIB from 1e-5 (no visible compression) to 10^0.5 (collapse), half a decade apart.
_DEEP_VIB = dict(beta_min=1e-5, beta_max=10 ** 0.5, n_betas=12, n_seeds=2, seed=0, hidden_layers=2, width=256,
                 bottleneck_dim=32, steps=1000, batch_size=100, lr=1e-3, optimizer="adam", n_train=5000, n_test=2000,
                 n_rank_points=256, epsilon=0.1, n_decoder_samples=12, device="auto")
PROFILES["deep_vib_mnist"] = {
    "quick": _DEEP_VIB | dict(n_betas=8, n_seeds=1, steps=400, n_train=2000, n_test=1000),
    "book": dict(_DEEP_VIB),
    "paper": _DEEP_VIB | dict(beta_min=1e-8, n_betas=18, n_seeds=3, width=1024, bottleneck_dim=256, steps=120_000,
                              lr=1e-4, n_train=60_000, n_test=10_000, n_rank_points=1000),
}


class Parameters(dict):
    """Resolved parameters; values readable as attributes (``p.steps``); ``given`` names those set
    explicitly rather than taken from the profile."""

    given: frozenset[str] = frozenset()

    def differs_from_profile(self, ignoring: tuple[str, ...] = ()) -> list[str]:
        """The explicitly set parameters other than ``ignoring``: a chapter's checks are calibrated
        on its profiles and say so when a run leaves them."""
        return sorted(self.given - set(ignoring))

    @property
    def run_label(self) -> str:
        """The results folder of this run: the profile's name, or ``<profile>-custom-<hash>`` when parameters
        were set explicitly, so that a custom run never overwrites the profile's saved results."""
        if not self.given:
            return self["profile"]
        digest = hashlib.sha1(repr(sorted((k, self[k]) for k in self.given)).encode()).hexdigest()[:8]
        return f"{self['profile']}-custom-{digest}"

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def table(self) -> str:
        width = max(map(len, self))
        return "\n".join(f"{k:<{width}}  {_show(v)}" for k, v in self.items())


def _show(value: Any) -> str:
    if isinstance(value, tuple) and len(value) > 6:
        return f"{len(value)} values from {value[0]:.3g} to {value[-1]:.3g}"
    if isinstance(value, tuple):
        return ", ".join(f"{v:g}" for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _validate(name: str, value: Any) -> Any:
    kind, lo, hi = _SPECS[name]
    fix = f"pass e.g. `-p {name} <value>` with a valid value, or leave it as None for the profile's value."
    if kind == "choice":
        if value not in lo and not (name == "device" and isinstance(value, str) and value.startswith("cuda:")):
            raise ValueError(f"{name}={value!r} is not one of {lo}; {fix}")
        return value
    if kind in ("floats", "nonnegs"):
        if isinstance(value, (int, float)) or not value:
            raise ValueError(f"{name}={value!r} must be a non-empty list of numbers; {fix}")
        return tuple(_validate_number(name, v, "float" if kind == "floats" else "nonneg", lo, hi, fix) for v in value)
    return _validate_number(name, value, kind, lo, hi, fix)


def _validate_number(name: str, value: Any, kind: str, lo: Any, hi: Any, fix: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}={value!r} must be a number; {fix}")
    if kind == "int":
        if value != int(value):
            raise ValueError(f"{name}={value!r} must be a whole number; {fix}")
        value = int(value)
        if value < lo or (hi is not None and value > hi):
            raise ValueError(f"{name}={value!r} is out of range [{lo}, {hi if hi is not None else '∞'}]; {fix}")
        return value
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}={value!r} must be finite; {fix}")
    if kind == "float" and not (value > lo and (hi is None or value < hi)):
        raise ValueError(f"{name}={value!r} must lie in ({lo}, {hi if hi is not None else '∞'}); {fix}")
    if kind == "nonneg" and value < lo:
        raise ValueError(f"{name}={value!r} must be >= {lo}; {fix}")
    return value


def resolve(chapter: str, profile: str | None = None, **given: Any) -> Parameters:
    """The chapter's parameters: the profile's values, overridden by every ``given`` value that is not None."""
    if chapter not in PROFILES:
        raise ValueError(f"unknown chapter {chapter!r}; known: {sorted(PROFILES)}.")
    profile = profile or os.environ.get("LOCALRANK_PROFILE") or "book"
    if profile not in PROFILE_NAMES:
        raise ValueError(f"profile={profile!r} is unknown; use one of {PROFILE_NAMES} (e.g. `-p profile quick`).")
    base: Mapping[str, Any] = PROFILES[chapter][profile]
    unknown = sorted(set(given) - set(base))
    if unknown:
        raise ValueError(f"{chapter} has no parameter(s) {unknown}; its parameters are {sorted(base)}.")
    out = Parameters(profile=profile)
    for name, default in base.items():
        value = given.get(name)
        out[name] = _validate(name, default if value is None else value)
    if "beta_min" in out and out["beta_min"] >= out["beta_max"]:
        raise ValueError(f"beta_min={out['beta_min']!r} must be below beta_max={out['beta_max']!r}; "
                         "pass e.g. `-p beta_min 1.5 -p beta_max 1500`.")
    out.given = frozenset(name for name, value in given.items() if value is not None)
    return out

# Gaussian IB (Thm 4, App. B) and deep VIB on its data (Fig. 2).  β is Chechik's (it multiplies I(T;Y));
# VIB's β_VIB = 1/β.  App. B's critical values are β = 4 and 100, so the sweeps span 1.5 to 1 500.
_SPECS.update({
    # Draws from a known Gaussian (not a finite data set, unlike n_train / n_test): millions cost nothing here.
    "n_train_draws": ("int", 10, 100_000_000),
    "n_test_draws": ("int", 10, 100_000_000),
})
PROFILES["gaussian_ib"] = {name: dict(beta_min=1.01, beta_max=1e4, n_betas=400, device="auto") for name in PROFILE_NAMES}
_DEEP_VIB_GAUSSIAN = dict(hidden_layers=2, width=16, beta_min=1.5, beta_max=1500.0, epsilon=0.1, n_test_draws=100_000,
                          n_rank_points=16, seed=0, device="auto")
PROFILES["deep_vib_gaussian"] = {
    "quick": _DEEP_VIB_GAUSSIAN | dict(n_betas=10, beta_max=600.0, steps=300, n_train_draws=200_000),
    "book": _DEEP_VIB_GAUSSIAN | dict(n_betas=32, steps=600, n_train_draws=1_000_000),
    "paper": _DEEP_VIB_GAUSSIAN | dict(n_betas=60, steps=2000, n_train_draws=1_000_000),
}

# --- theory chapter: small bias-free ReLU nets trained to approximately min-norm solutions in seconds ---
_SPECS.update({
    "reference_width": ("int", 2, 100_000),
    "amplification": ("float", 0.0, None),
    "n_random_matrices": ("int", 1, 1_000_000),
})
_THEORY = dict(n_train=32, dim_x=8, reference_width=8, width=16, hidden_layers=5, lr=3e-3, weight_decay=1e-3,
               amplification=10.0, seed=0, device="auto")
PROFILES["theory"] = {
    "quick": _THEORY | dict(steps=2000, epsilon_grid=tuple(10.0 ** (k / 2) for k in range(-6, 3)),
                            n_random_matrices=300),
    "book": _THEORY | dict(steps=6000, epsilon_grid=tuple(10.0 ** (k / 4) for k in range(-12, 5)),
                           n_random_matrices=3000),
    "paper": _THEORY | dict(n_train=64, steps=40_000, weight_decay=1e-4,
                            epsilon_grid=tuple(10.0 ** (k / 8) for k in range(-24, 9)), n_random_matrices=30_000),
}

# The appendix on computing local rank: the benchmark at a reduced size and its scaling sweeps.  Grids are
# lists of whole numbers given as floats (the "floats" kind); the chapter rounds them.
_SPECS |= {
    "sample_grid": ("floats", 0.0, None),
    "width_grid": ("floats", 0.0, None),
    "depth_grid": ("floats", 0.0, None),
    "scaling_points": ("int", 2, 10_000),
    "memory_points": ("int", 1, 10_000),
}
PROFILES["computing_local_rank"] = {
    "quick": dict(n_rank_points=24, steps=50, epsilon=0.01, sample_grid=(4.0, 8.0, 16.0), width_grid=(50.0, 100.0, 200.0),
                  depth_grid=(1.0, 2.0, 4.0), scaling_points=6, memory_points=200, seed=0, device="auto"),
    "book": dict(n_rank_points=150, steps=200, epsilon=0.01, sample_grid=(20.0, 40.0, 80.0),
                 width_grid=(50.0, 100.0, 200.0, 400.0), depth_grid=(1.0, 2.0, 4.0, 8.0), scaling_points=20,
                 memory_points=2000, seed=0, device="auto"),
    "paper": dict(n_rank_points=1000, steps=200, epsilon=0.01, sample_grid=(100.0, 300.0, 1000.0),
                  width_grid=(50.0, 100.0, 200.0, 400.0, 800.0), depth_grid=(1.0, 2.0, 4.0, 8.0, 16.0),
                  scaling_points=100, memory_points=10_000, seed=0, device="auto"),
}
