"""Run histories: what a training run measured, saved atomically and loadable later."""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path(os.environ.get("LOCALRANK_RESULTS", Path(__file__).resolve().parent.parent / "results"))


_UMASK = os.umask(0)
os.umask(_UMASK)


def results_path(chapter: str, profile: str, name: str) -> Path:
    """Where a chapter keeps a run: ``results/<chapter>/<profile>/<name>.json`` (``$LOCALRANK_RESULTS``
    moves the folder); the profile level keeps the test suite's quick runs apart from the book's."""
    return RESULTS_DIR / chapter / profile / f"{name.replace(' ', '_')}.json"


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would make results unreadable to collaborators
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass
class History:
    """Checkpoints of one run: ``local_rank[i][l][j]`` is LR at checkpoint i, layer l, ε_j."""

    config: dict[str, Any]
    epsilons: list[float]
    layer_names: list[str]
    steps: list[int] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    local_rank: list[list[list[float]]] = field(default_factory=list)
    local_rank_sem: list[list[list[float]]] = field(default_factory=list)
    elapsed_s: float = 0.0

    def lr(self, eps: float | None = None) -> np.ndarray:
        """LR at ``eps`` (default: the first ε) as an array (checkpoints, layers)."""
        return np.asarray(self.local_rank)[:, :, self._eps_index(eps)]

    def lr_sem(self, eps: float | None = None) -> np.ndarray:
        return np.asarray(self.local_rank_sem)[:, :, self._eps_index(eps)]

    def _eps_index(self, eps: float | None) -> int:
        if eps is None:
            return 0
        for j, e in enumerate(self.epsilons):
            if math.isclose(e, eps, rel_tol=1e-9):
                return j
        raise ValueError(f"ε={eps!r} was not recorded in this run; recorded: {self.epsilons}.")

    def rank_summary(self, eps: float | None = None) -> list[dict[str, float]]:
        """Per layer: peak LR, the step of the peak, final LR, final / peak and the drop 1 - final / peak."""
        lr = self.lr(eps)
        rows = []
        for l, name in enumerate(self.layer_names):
            peak_i = int(np.argmax(lr[:, l]))
            peak, final = float(lr[peak_i, l]), float(lr[-1, l])
            ratio = final / peak if peak > 0 else float("nan")
            rows.append({"layer": name, "peak": peak, "peak_step": self.steps[peak_i], "final": final,
                         "final_over_peak": ratio, "drop": 1.0 - ratio})
        return rows

    def drop_report(self, eps: float | None = None, min_drop: float = 0.05) -> tuple[dict[str, bool], str]:
        """Whether each layer's LR ends at least ``min_drop`` (a fraction) below a peak reached
        before the last checkpoint, and the same in words."""
        verdicts, lines = {}, []
        for row in self.rank_summary(eps):
            drop = row["drop"]
            verdicts[row["layer"]] = bool(drop >= min_drop and row["peak_step"] < self.steps[-1])
            lines.append(f"{row['layer']}: peak {row['peak']:.1f} at step {row['peak_step']}, final {row['final']:.1f} "
                         f"({-100 * drop:+.0f} %) -> {'drop' if verdicts[row['layer']] else 'no drop'}")
        n = sum(verdicts.values())
        head = (f"The terminal-phase drop (final LR at least {100 * min_drop:.0f} % below its peak) appears in "
                f"{n} of {len(verdicts)} layers.")
        return verdicts, "\n".join([head, *lines])

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "History":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no saved run at {path}; run the chapter (or train()) that writes it first.")
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"{path} is not a saved History ({err}); delete it and re-run the chapter.") from err


def drop_table(histories: dict[str, History], eps: float | None = None) -> str:
    """Final / peak LR per layer for several runs, one row per run."""
    names = next(iter(histories.values())).layer_names
    width = max(len(k) for k in histories) + 2
    lines = [" " * width + "".join(f"{n:>14}" for n in names) + "   (final LR / peak LR)"]
    for label, h in histories.items():
        cells = "".join(f"{r['final']:6.1f}/{r['peak']:<6.1f} " for r in h.rank_summary(eps))
        lines.append(f"{label:<{width}}{cells}")
    return "\n".join(lines)
