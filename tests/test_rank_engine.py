"""The fast engine (epsilon_ranks): identical ranks to torch.func, a certified Gram/SVD choice, bounded memory."""

from __future__ import annotations

import copy

import pytest
import torch

from localrank_utils.bench import floor_flops, measure_peak, run_benchmark
from localrank_utils.models import MLP
from localrank_utils.rank import (RankReport, _bracketed_count, _positive_eigenvalues, epsilon_rank, epsilon_ranks,
                                  jacobians, local_rank)


def reference_ranks(model: MLP, x: torch.Tensor, eps, relative=False) -> list[torch.Tensor]:
    """torch.func Jacobians of a float64 copy, full n_l x n_0 SVD, count: the definition, no shortcut."""
    m64 = copy.deepcopy(model).double()
    return [epsilon_rank(torch.linalg.svdvals(j), eps, relative=relative)
            for j in jacobians(m64, x.double(), method="torch_func")]


NETS = [
    ((30, 40, 40, 40, 5), "relu"),
    ((30, 50, 20, 5), "tanh"),
    ((30, 40, 40, 3), "leaky_relu"),
    ((30, 40, 40, 40, 40, 40, 5), "gelu"),
    ((30, 25, 40, 5), "identity"),
    ((30, 12, 40, 40, 5), "relu"),  # narrow W_1: rank W_1 = 12 < n_0 = 30
]
EPSILONS = [((1e-3, 1e-2, 0.1), False), ((1e-3, 0.05, 0.5), True)]


@pytest.mark.parametrize(("widths", "activation"), NETS, ids=lambda v: str(v))
@pytest.mark.parametrize(("eps", "relative"), EPSILONS, ids=["absolute", "relative"])
def test_engine_ranks_equal_torch_func_ranks(widths, activation, eps, relative):
    model = MLP(widths, activation=activation, seed=5)
    x = torch.randn(24, widths[0])
    report = RankReport()
    fast = epsilon_ranks(model, x, eps, relative=relative, report=report)
    for l, (a, b) in enumerate(zip(fast, reference_ranks(model, x, eps, relative))):
        assert torch.equal(a, b), f"layer {l + 1}: {(a != b).sum()} ranks differ"
    assert report.undecided == 0


@pytest.mark.parametrize(("widths", "activation"), NETS, ids=lambda v: str(v))
@pytest.mark.parametrize("eps", [1e-3, 0.03, 0.3])
def test_one_epsilon_counts_by_inertia_and_equals_torch_func(widths, activation, eps):
    """A single absolute ε takes the LDLᵀ-inertia count on CPU: same ranks as the definition."""
    model = MLP(widths, activation=activation, seed=7)
    x = torch.randn(20, widths[0])
    report = RankReport()
    fast = epsilon_ranks(model, x, eps, report=report)
    for l, (a, b) in enumerate(zip(fast, reference_ranks(model, x, (eps,)))):
        assert torch.equal(a, b), f"layer {l + 1}: {(a != b).sum()} ranks differ"
    assert report.undecided == 0
    assert report.inertia == report.gram + report.active_gram


def _symmetric_with_spectrum(spectra: torch.Tensor) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(*spectra.shape, spectra.shape[-1], dtype=torch.float64))
    return q @ torch.diag_embed(spectra) @ q.mT


def test_inertia_counts_equal_eigenvalue_counts_with_2x2_pivots():
    """Indefinite shifts make Bunch–Kaufman take 2x2 pivots; the count must still be exact."""
    gen = torch.Generator().manual_seed(0)
    spectra = torch.randn(64, 40, dtype=torch.float64, generator=gen).mul(3)
    a = _symmetric_with_spectrum(spectra)
    shift = torch.randn(64, dtype=torch.float64, generator=gen)
    counts, bound, ok = _positive_eigenvalues(a, torch.linalg.vector_norm(a, dim=(1, 2)), shift)
    _, pivots, _ = torch.linalg.ldl_factor_ex(a - shift[:, None, None] * torch.eye(40, dtype=torch.float64))
    assert (pivots < 0).any(), "the test needs 2x2 pivots"
    assert ok.all() and bool((bound < 1e-10).all())
    assert torch.equal(counts, (spectra > shift[:, None]).sum(1))


def test_bracket_refuses_a_singular_value_at_the_threshold():
    """σ² within δ = 1e-12 of ε² (1e-13 above it): not certified, the engine then recomputes by SVD."""
    eps = 0.1
    spectra = torch.tensor([[4.0, 1.0, eps**2 * (1 + 1e-11), 1e-6], [4.0, 1.0, eps**2 * 1.5, 1e-6]],
                           dtype=torch.float64)
    a = _symmetric_with_spectrum(spectra)
    zero = torch.zeros(2, dtype=torch.float64)
    counts, ok = _bracketed_count(a, torch.full((2,), 1e-12, dtype=torch.float64), zero, eps, None)
    assert ok.tolist() == [False, True]
    assert counts[1] == 3


def test_rank_deficient_first_layer_matches_torch_func():
    model = MLP((30, 40, 40, 5), seed=1)
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.randn(40, 4) @ torch.randn(4, 30))
    x = torch.randn(16, 30)
    eps = (1e-4, 1e-2)
    fast = epsilon_ranks(model, x, eps)
    assert max(int(r.max()) for r in fast) <= 4
    for a, b in zip(fast, reference_ranks(model, x, eps)):
        assert torch.equal(a, b)


def test_float32_torch_func_path_agrees_on_the_mnist_sized_net():
    """The baseline the benchmark times (float32 torch.func + svdvals) against the engine."""
    model = MLP((784, 200, 200, 10), seed=0)
    x = torch.rand(12, 784)
    fast = epsilon_ranks(model, x, 0.01)
    slow = epsilon_ranks(model, x, 0.01, method="torch_func")
    assert all(torch.equal(a, b) for a, b in zip(fast, slow))


def _stiff_linear_net(dtype=torch.float64) -> MLP:
    """Identity activations; W_2 has singular values from 1e4 down to 1e-6: κ = 1e10, so κ² exceeds 1/u."""
    model = MLP((20, 20, 20), activation="identity", seed=0).to(dtype)
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.eye(20))
        q1, _ = torch.linalg.qr(torch.randn(20, 20, dtype=torch.float64))
        q2, _ = torch.linalg.qr(torch.randn(20, 20, dtype=torch.float64))
        model.layers[1].weight.copy_(q1 @ torch.diag(torch.logspace(4, -6, 20, dtype=torch.float64)) @ q2.T)
    return model


def test_gram_is_refused_where_it_would_be_wrong():
    model = _stiff_linear_net()
    x = torch.randn(4, 20, dtype=torch.float64)
    eps = tuple(float(e) for e in torch.logspace(-5.9, -3.1, 8))  # thresholds among the small σ
    truth = reference_ranks(model, x, eps)[1]
    w2 = model.layers[1].weight.detach()
    gram_count = epsilon_rank(torch.linalg.eigvalsh(w2.T @ w2).clamp_min(0).sqrt().flip(-1), eps)
    assert not torch.equal(gram_count, truth[0]), "this case must be one the Gram route gets wrong"
    report = RankReport()
    got = epsilon_ranks(model, x, eps, report=report)[1]
    assert torch.equal(got, truth)
    assert report.gram == report.active_gram == 0 and report.svd == report.pairs == 4


def test_gram_is_used_where_its_bound_resolves_the_threshold():
    model = MLP((30, 40, 40, 40, 5), activation="tanh", seed=2)
    report = RankReport()
    epsilon_ranks(model, torch.randn(10, 30), 0.01, dtype=torch.float64, report=report)
    assert report.svd == 0 and report.gram + report.active_gram == report.pairs == 30  # layers 2-4


def test_relu_nets_take_the_active_set_route_and_agree():
    model = MLP((50, 80, 80, 80, 5), seed=3)
    x = torch.randn(20, 50)
    report = RankReport()
    fast = epsilon_ranks(model, x, (1e-3, 0.03), report=report)
    assert report.active_gram > 0
    for a, b in zip(fast, reference_ranks(model, x, (1e-3, 0.03))):
        assert torch.equal(a, b)


def test_float32_results_it_cannot_certify_are_recomputed_in_float64():
    model = _stiff_linear_net(torch.float32)
    x = torch.randn(6, 20)
    eps = (1e-5, 1e-4)
    report = RankReport()
    got = epsilon_ranks(model, x, eps, dtype=torch.float32, report=report)
    assert report.recomputed_float64 == 6
    assert all(torch.equal(a, b) for a, b in zip(got, reference_ranks(model, x, eps)))


def test_precision_is_chosen_for_epsilon():
    model = MLP((30, 40, 40, 5), seed=0)
    x = torch.randn(8, 30)
    coarse, fine = RankReport(), RankReport()
    epsilon_ranks(model, x, 0.5, report=coarse)
    epsilon_ranks(model, x, 1e-6, report=fine)
    assert coarse.dtype == "float32" and fine.dtype == "float64"


@pytest.mark.parametrize("chunk_size", [1, 7, None])
def test_chunking_gives_identical_ranks(chunk_size):
    model = MLP((30, 40, 40, 40, 5), seed=4)
    x = torch.randn(23, 30)
    whole = epsilon_ranks(model, x, (1e-3, 0.05), chunk_size=23)
    parts = epsilon_ranks(model, x, (1e-3, 0.05), chunk_size=chunk_size)
    assert all(torch.equal(a, b) for a, b in zip(whole, parts))


def test_memory_budget_bounds_the_peak_and_forces_chunks():
    model = MLP((784, 200, 200, 200, 10), seed=0)
    x = torch.rand(1500, 784)
    budget = 96 * 2**20
    report = RankReport()
    epsilon_ranks(model, x[:100], 0.01, max_memory=budget)  # map the kernels' code before the reading
    peak, ranks = measure_peak(lambda: epsilon_ranks(model, x, 0.01, max_memory=budget, report=report),
                               torch.device("cpu"))
    assert report.chunk_size < 1500
    assert peak <= budget, f"peak {peak / 2**20:.0f} MiB above the {budget / 2**20:.0f} MiB budget"
    small = epsilon_ranks(model, x[:300], 0.01, chunk_size=300)
    assert all(torch.equal(a[:300], b) for a, b in zip(ranks, small))


def test_local_rank_is_the_mean_of_the_engine_ranks():
    model = MLP((30, 40, 40, 5), seed=6)
    x = torch.randn(12, 30)
    lr = local_rank(model, x, (0.01, 0.1))
    ranks = epsilon_ranks(model, x, (0.01, 0.1))
    for l, r in enumerate(ranks):
        assert lr.mean[l].tolist() == pytest.approx(r.double().mean(0).tolist())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"decomposition": "qr"}, "decomposition='qr'"),
        ({"chunk_size": 0}, "chunk_size=0"),
        ({"max_memory": 1000}, "max_memory=1000"),
        ({"dtype": torch.float16}, "dtype=torch.float16"),
        ({"epsilons": float("nan")}, "ε=nan"),
        ({"epsilons": 2.0, "relative": True}, "relative ε=2.0"),
    ],
)
def test_bad_engine_arguments_raise_clear_value_errors(kwargs, message):
    args = {"epsilons": 0.01} | kwargs
    with pytest.raises(ValueError, match=message):
        epsilon_ranks(MLP((4, 3, 2), seed=0), torch.randn(3, 4), args.pop("epsilons"), **args)


def test_bad_inputs_to_the_engine_raise_clear_value_errors():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        epsilon_ranks(MLP((4, 3, 2), seed=0), torch.randn(3, 5), 0.01)
    with pytest.raises(ValueError, match="points=1"):
        run_benchmark(1)


def test_floor_counts_products_grams_and_one_factorisation():
    f = floor_flops((10, 4, 6, 3), r=4, n_samples=2)
    products = 2 * (2 * 6 * 4 * 4 + 2 * 3 * 6 * 4)
    grams = 2 * (4 * 5 * 6 + 3 * 4 * 4)
    factorisations = 2 * (4**3 / 3 + 3**3 / 3)
    assert f["products"] == products and f["gram"] == grams and f["factorisation"] == pytest.approx(factorisations)
    assert f["total"] == pytest.approx(products + grams + factorisations)


def test_benchmark_runs_and_reports_identical_ranks():
    res = run_benchmark(12, device="cpu", train_steps=0, repeats=1, memory_points=None)
    assert res["mismatches"] == [0] * 5
    assert res["engine_mean_rank"] == res["baseline_mean_rank"]
    assert res["speedup"] > 0 and res["floor_distance"] > 0
