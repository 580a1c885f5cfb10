"""The training loop: determinism, checkpoints, history artifacts, and clear errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from localrank_utils.devices import resolve_device
from localrank_utils.models import MLP
from localrank_utils.results import History, atomic_write_text
from localrank_utils.train import Split, log_spaced_steps, train


def toy_problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(200, 8, generator=g)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    return Split(x[:150], y[:150]), Split(x[150:], y[150:])


def run(seed: int = 0, **kwargs) -> History:
    train_split, test_split = toy_problem()
    model = MLP((8, 16, 16, 4), seed=seed)
    args = dict(rank_inputs=test_split.x[:20], steps=120, batch_size=16, lr=1e-2, n_checkpoints=8,
                epsilons=(0.01, 0.1), seed=seed, device="cpu", progress=False)
    return train(model, train_split, test_split, **(args | kwargs))


def test_same_seed_gives_identical_numbers_and_another_seed_does_not():
    a, b, c = run(0), run(0), run(1)
    assert a.metrics == b.metrics and a.local_rank == b.local_rank
    assert a.metrics["train_loss"] != c.metrics["train_loss"]


def test_history_records_every_checkpoint_layer_and_epsilon():
    h = run()
    assert h.steps == log_spaced_steps(120, 8) and h.steps[-1] == 120
    assert np.asarray(h.local_rank).shape == (len(h.steps), 3, 2)
    assert h.layer_names == ["p1", "p2", "p3"]
    assert set(h.metrics) == {"train_loss", "test_loss", "train_acc", "test_acc"}
    assert h.metrics["train_acc"][-1] > 0.9  # the toy problem is learnable
    assert np.all(h.lr(0.1) <= h.lr(0.01))  # a larger ε never counts more
    with pytest.raises(ValueError, match="ε=0.5 was not recorded"):
        h.lr(0.5)


def test_a_single_checkpoint_trains_every_step():
    train_split, test_split = toy_problem()
    weights = []
    for n_checkpoints in (1, 8):
        model = MLP((8, 16, 16, 4), seed=0)
        h = train(model, train_split, test_split, rank_inputs=test_split.x[:5], steps=120, batch_size=16, lr=1e-2,
                  n_checkpoints=n_checkpoints, seed=0, device="cpu", progress=False)
        weights.append(model.layers[0].weight.detach().clone())
    assert h.steps[-1] == 120 and torch.equal(weights[0], weights[1])


def test_checkpoint_hook_adds_its_metrics():
    h = run(on_checkpoint=lambda model: {"weight_norm": float(model.layers[0].weight.norm())})
    assert len(h.metrics["weight_norm"]) == len(h.steps) and h.metrics["weight_norm"][0] > 0


def test_history_round_trips_through_an_atomic_json_file(tmp_path):
    h = run()
    path = h.save(tmp_path / "sub" / "run.json")
    loaded = History.load(path)
    assert loaded == h
    assert [p.name for p in path.parent.iterdir()] == ["run.json"]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as readable as any file the user writes


def test_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "run.json"
    atomic_write_text(path, "old")

    def fail(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", fail)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


def test_loading_garbage_names_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"nope": 1}))
    with pytest.raises(ValueError, match="bad.json"):
        History.load(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        History.load(tmp_path / "missing.json")


def test_drop_report_detects_a_fall_from_an_earlier_peak():
    h = History(config={}, epsilons=[0.01], layer_names=["p1", "p2"], steps=[1, 10, 100],
                local_rank=[[[5.0], [5.0]], [[5.0], [9.0]], [[5.0], [3.0]]],
                local_rank_sem=[[[0.0], [0.0]]] * 3)
    verdicts, text = h.drop_report()
    assert verdicts == {"p1": False, "p2": True}
    assert "1 of 2 layers" in text and "p2: peak 9.0 at step 10, final 3.0 (-67 %)" in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0.0}, "lr=0.0"),
        ({"weight_decay": -1.0}, "weight_decay=-1.0"),
        ({"optimizer": "lbfgs"}, "optimizer='lbfgs'"),
        ({"loss": "hinge"}, "loss='hinge'"),
        ({"batch_size": 1000}, "batch_size=1000"),
        ({"steps": 0}, "total_steps=0"),
        ({"epsilons": (0.0,)}, "ε=0.0"),
        ({"device": "tpu"}, "device='tpu'"),
    ],
)
def test_bad_training_arguments_fail_before_training(kwargs, message):
    with pytest.raises(ValueError, match=message):
        run(**kwargs)


def test_device_auto_resolves_to_an_available_device():
    dev = resolve_device("auto")
    assert dev.type in {"cuda", "mps", "cpu"}
    if not torch.cuda.is_available():
        assert dev.type != "cuda"
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
