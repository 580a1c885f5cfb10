"""Fig. 1 run specs: parallel runs in worker processes give the numbers of an in-process run."""

from __future__ import annotations

from dataclasses import replace

import pytest

from localrank_utils.experiments import ExperimentSpec, fig1_specs, run_experiment, run_experiments
from localrank_utils.profiles import resolve


def tiny(**changes) -> ExperimentSpec:
    base = ExperimentSpec(dataset="gaussian", steps=40, hidden_layers=2, width=16, dim_x=6, dim_y=2, n_train=64,
                          n_test=64, n_rank_points=8, batch_size=16, lr=1e-3, n_checkpoints=4,
                          epsilons=(0.01,), device="cpu", label="tiny")
    return replace(base, **changes)


def test_worker_processes_reproduce_the_in_process_numbers():
    specs = [tiny(), tiny(weight_decay=1.0, label="decay")]
    parallel = run_experiments(specs, workers=2)
    for spec, h in zip(specs, parallel):
        alone = run_experiment(spec, progress=False)
        assert h.local_rank == alone.local_rank and h.metrics == alone.metrics
        assert h.config["weight_decay"] == spec.weight_decay
    assert parallel[0].metrics != parallel[1].metrics


def test_fig1_specs_put_the_main_run_first_and_record_three_thresholds():
    p = resolve("mnist", "book")
    specs = fig1_specs(p, "mnist")
    assert specs[0].weight_decay == p.weight_decay
    assert sorted(s.weight_decay for s in specs) == sorted({p.weight_decay, *p.compare_weight_decays})
    assert specs[0].epsilons == (p.epsilon, p.epsilon / 10, p.epsilon * 10)
    assert len({s.label for s in specs}) == len(specs)


def test_unknown_dataset_and_too_many_rank_points_are_refused():
    with pytest.raises(ValueError, match="dataset='cifar'"):
        run_experiment(tiny(dataset="cifar"), progress=False)
    with pytest.raises(ValueError, match="n_rank_points=100 exceeds n_test=64"):
        run_experiment(tiny(n_rank_points=100), progress=False)
