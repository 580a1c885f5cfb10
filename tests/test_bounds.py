"""The theory chapter's lemmas and bounds on cases that can be checked by hand or by brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from localrank_utils import bounds as bd
from localrank_utils.models import MLP
from localrank_utils.rank import epsilon_rank, jacobians, singular_values


def test_frobenius_norm_bounds_epsilon_rank_on_many_random_matrices():
    """(14): ‖A‖_F >= ε·sqrt(rank_ε(A)) for every A and ε > 0."""
    rng = np.random.default_rng(1)
    for a in bd.random_test_matrices(500, seed=0):
        s = np.linalg.svd(a, compute_uv=False)
        # ε on a log grid, plus ε equal to each singular value (where the strict count steps)
        eps = np.concatenate([10.0 ** rng.uniform(-10, 10, size=20), s[s > 0]])
        gap = bd.frobenius_rank_gap(torch.from_numpy(a), eps.tolist())
        fro = np.linalg.norm(a)
        assert np.all(gap >= -1e-9 * max(fro, 1.0)), (a.shape, s, eps[gap < 0])


def test_frobenius_bound_is_tight_for_equal_singular_values_and_edge_cases():
    # rank_ε counts σ > ε strictly: at ε just below a flat spectrum of value c, ε·sqrt(r) → ‖A‖_F.
    a = 3.0 * torch.eye(4, dtype=torch.float64)
    gap = bd.frobenius_rank_gap(a, [3.0 - 1e-12, 3.0])
    assert gap[0] == pytest.approx(0.0, abs=1e-10)
    assert gap[1] == pytest.approx(6.0)  # nothing counted at ε = σ
    zero = torch.zeros(3, 2, dtype=torch.float64)
    assert np.all(bd.frobenius_rank_gap(zero, [1e-300, 1.0]) == 0.0)
    one = torch.tensor([[2.5]], dtype=torch.float64)
    assert bd.frobenius_rank_gap(one, [1.0]).item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="non-empty 2-D"):
        bd.frobenius_rank_gap(torch.zeros(3), [1.0])


@pytest.mark.parametrize("trained", [False, True])
def test_jacobian_chain_equals_autograd(trained):
    torch.manual_seed(0)
    model = MLP((7, 9, 6, 9, 3), seed=1).double()
    x = torch.randn(5, 7, dtype=torch.float64)
    if trained:
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        y = torch.randn(5, 3, dtype=torch.float64)
        for _ in range(50):
            opt.zero_grad()
            (model(x) - y).pow(2).mean().backward()
            opt.step()
    chain = bd.jacobian_chain(model, x)
    for got, ref, engine in zip(chain, bd.autograd_jacobians(model, x), jacobians(model, x)):
        assert got.shape == ref.shape
        assert torch.allclose(got, ref, atol=1e-12)
        assert torch.allclose(got, engine, atol=1e-12)


def test_jacobian_chain_refuses_activations_without_a_0_1_pattern():
    with pytest.raises(ValueError, match="activation pattern"):
        bd.jacobian_chain(MLP((3, 4, 2), activation="tanh"), torch.zeros(1, 3))


@pytest.mark.parametrize("layer,rank", [(2, 1), (3, 2), (4, 1)])
def test_jacobian_rank_at_most_the_rank_of_a_deliberately_low_rank_layer(layer, rank):
    model = bd.make_layer_low_rank(MLP((10, 12, 12, 12, 6), seed=2).double(), layer, rank, seed=5)
    assert int(torch.linalg.matrix_rank(model.layers[layer - 1].weight.detach())) == rank
    x = torch.randn(40, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for l, j in enumerate(jacobians(model, x), start=1):
        w_rank = int(torch.linalg.matrix_rank(model.layers[l - 1].weight.detach()))
        assert int(torch.linalg.matrix_rank(j).max()) <= w_rank
    # every later layer is limited by the bottleneck too
    later = jacobians(model, x)[layer - 1:]
    assert all(int(torch.linalg.matrix_rank(j).max()) <= rank for j in later)


def test_lemma5_fails_for_large_epsilon_and_holds_below_the_smallest_singular_value():
    s = [1.0, 0.5, 0.25]
    model = bd.amplifying_network(s, amplification=4.0, depth=2)
    x = torch.rand(6, 3, dtype=torch.float64) + 0.1  # positive inputs: every ReLU active
    j = jacobians(model, x)[-1]
    assert torch.allclose(j, 4.0 * torch.diag(torch.tensor(s, dtype=torch.float64)).expand(6, 3, 3))
    w = model.layers[-1].weight.detach()
    eps = 0.6  # rank_ε(W) = 1 but J = 4·W has singular values 4, 2, 1
    assert int(epsilon_rank(torch.linalg.svdvals(j[0]), eps)) == 3 > int(epsilon_rank(torch.linalg.svdvals(w), eps)) == 1
    onset = bd.lemma5_onset(torch.linalg.svdvals(j), torch.linalg.svdvals(w))
    assert onset == pytest.approx(0.25) == pytest.approx(bd.smallest_nonzero_singular_value(w))
    below = np.linspace(1e-3, onset, 50, endpoint=False)
    assert np.all(epsilon_rank(torch.linalg.svdvals(j), below.tolist()).max(0).values.numpy()
                  <= epsilon_rank(torch.linalg.svdvals(w), below.tolist()).numpy())


def test_lemma5_onset_on_hand_made_spectra():
    assert bd.lemma5_onset(torch.tensor([2.0, 0.1]), torch.tensor([3.0, 1.0])) == math.inf
    assert bd.lemma5_onset(torch.tensor([[2.0, 0.0]]), torch.tensor([1.0, 1.0])) == pytest.approx(1.0)
    # first failure between the two W values: counts J {ε<2:1}, W {ε<0.5:2, ε<1.5:1}; fails on [1.5, 2)
    assert bd.lemma5_onset(torch.tensor([2.0]), torch.tensor([1.5, 0.5])) == pytest.approx(1.5)


def test_bound_functions_on_hand_computed_values():
    # (12) with B = √2: (B/√2)^{k/L} = 1, so the bound is √2·√((L+1)/L)
    assert bd.timor_classification_bound(math.sqrt(2), 2, 3) == pytest.approx(math.sqrt(2) * math.sqrt(4 / 3))
    assert bd.timor_classification_bound(2 * math.sqrt(2), 2, 4) == pytest.approx(math.sqrt(2) * 2**0.5 * math.sqrt(5 / 4))
    assert bd.timor_interpolation_bound(9.0, 2, 4) == pytest.approx(3.0)
    assert bd.ratio_bound("interpolation", 16.0, 2, 8) == pytest.approx(2.0)
    assert bd.harmonic_mean([1.0, 2.0, 4.0]) == pytest.approx(3 / 1.75)
    assert bd.frobenius_to_spectral_ratio(torch.diag(torch.tensor([3.0, 4.0]))) == pytest.approx(5 / 4)
    assert bd.frobenius_to_spectral_ratio(torch.tensor([[3.0, 4.0]])) == pytest.approx(1.0)  # a row: F = σ
    assert bd.spectral_norm(torch.diag(torch.tensor([3.0, -4.0]))) == pytest.approx(4.0)
    assert np.allclose(bd.local_rank_bound(2.0, 3.0, [1.0, 2.0]), [36.0, 9.0])
    # hidden layers: H ≤ b over L layers with r_L = 1 leaves (L-1)/(L/b - 1)
    assert bd.hidden_layer_ratio_bound(2.0, 4) == pytest.approx(3.0)
    assert bd.smallest_nonzero_singular_value(torch.diag(torch.tensor([5.0, 0.2, 0.0]))) == pytest.approx(0.2)


@pytest.mark.parametrize("call,match", [
    (lambda: bd.timor_classification_bound(2.0, 3, 3), "L > k"),
    (lambda: bd.timor_interpolation_bound(-1.0, 2, 3), "B=-1"),
    (lambda: bd.ratio_bound("ranking", 2.0, 2, 3), "problem='ranking'"),
    (lambda: bd.harmonic_mean([1.0, 0.0]), "positive"),
    (lambda: bd.local_rank_bound(2.0, 1.0, [0.0]), "ε"),
    (lambda: bd.hidden_layer_ratio_bound(5.0, 4), "b < L"),
    (lambda: bd.frobenius_to_spectral_ratio(torch.zeros(2, 2)), "zero matrix"),
    (lambda: bd.amplifying_network([1.0, -1.0], 2.0), "positive"),
    (lambda: bd.reference_problem("ranking", 10, 3, 4), "problem='ranking'"),
])
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("problem", bd.PROBLEMS)
def test_reference_problem_satisfies_its_constraints_with_the_computed_bound(problem):
    ref = bd.reference_problem(problem, 20, 5, 6, seed=3)
    assert torch.allclose(ref.x.norm(dim=1), torch.ones(20, dtype=torch.float64))
    out = ref.reference(ref.x)[:, 0].detach()
    if problem == "classification":
        assert float((ref.y * out).min()) == pytest.approx(1.0)
    else:
        assert torch.allclose(out, ref.y) and float(ref.y.max()) == pytest.approx(1.0) and bool((ref.y > 0).all())
    fro, _ = bd.layer_norms(ref.reference)
    assert np.allclose(fro, ref.frobenius_bound)  # balanced: every layer at B


def test_balancing_preserves_the_function_and_does_not_increase_the_norm():
    model = bd.bias_free_mlp((4, 5, 5, 1), seed=0).double()
    with torch.no_grad():
        model.layers[0].weight.mul_(7.0)
    x = torch.randn(8, 4, dtype=torch.float64)
    before, norm_before = model(x).detach(), sum(float(l.weight.detach().pow(2).sum()) for l in model.layers)
    bd.balance_layers(model, 2.0)
    assert torch.allclose(model(x), 2.0 * before, atol=1e-12)
    fro, _ = bd.layer_norms(model)
    assert np.allclose(fro, fro[0])
    bd.balance_layers(model, 0.5)
    assert sum(float(l.weight.detach().pow(2).sum()) for l in model.layers) <= norm_before
    with pytest.raises(ValueError, match="biases"):
        bd.balance_layers(MLP((2, 3, 1)))
