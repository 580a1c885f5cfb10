"""The local-rank engine: both Jacobian paths against float64 autograd, ranks against NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from localrank_utils.models import MLP
from localrank_utils.rank import epsilon_rank, jacobians, local_rank, singular_values

ACTIVATIONS = ["relu", "tanh", "leaky_relu"]


def autograd_jacobians(model: MLP, x: torch.Tensor) -> list[torch.Tensor]:
    """Reference: one torch.autograd.functional.jacobian call per sample and layer, float64."""
    out = []
    for l in range(len(model.layers)):
        per_sample = [torch.autograd.functional.jacobian(lambda xi: model.preactivations(xi[None])[l][0], xi) for xi in x]
        out.append(torch.stack(per_sample))
    return out


@pytest.fixture(params=ACTIVATIONS)
def net_and_inputs(request):
    torch.manual_seed(0)
    model = MLP((12, 16, 9, 16, 4), activation=request.param, seed=3).double()
    return model, torch.randn(6, 12, dtype=torch.float64)


@pytest.mark.parametrize("method", ["closed_form", "torch_func"])
def test_jacobians_match_float64_autograd(net_and_inputs, method):
    model, x = net_and_inputs
    for got, ref in zip(jacobians(model, x, method=method, chunk_size=4), autograd_jacobians(model, x)):
        assert got.shape == ref.shape
        assert torch.allclose(got, ref, atol=1e-6, rtol=0)


def test_reduced_singular_values_equal_full_svd(net_and_inputs):
    model, x = net_and_inputs
    fast = singular_values(model, x, method="closed_form")
    full = [torch.linalg.svdvals(j) for j in autograd_jacobians(model, x)]
    for s_fast, s_full in zip(fast, full):
        k = s_fast.shape[1]
        assert torch.allclose(s_fast, s_full[:, :k], atol=1e-10)
        assert torch.all(s_full[:, k:] < 1e-10)  # what the reduction drops is exactly zero


def test_sequential_module_uses_torch_func_and_agrees():
    torch.manual_seed(1)
    mlp = MLP((10, 8, 8, 3), activation="tanh", seed=0).double()
    seq = nn.Sequential(mlp.layers[0], nn.Tanh(), mlp.layers[1], nn.Tanh(), mlp.layers[2])
    x = torch.randn(5, 10, dtype=torch.float64)
    for a, b in zip(jacobians(seq, x), jacobians(mlp, x, method="closed_form")):
        assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_epsilon_ranks_equal_numpy_svd_count(activation):
    model = MLP((30, 40, 40, 5), activation=activation, seed=7)
    x = torch.randn(16, 30)
    epsilons = (1e-3, 0.05, 0.3)
    lr = local_rank(model, x, epsilons)
    for l, j in enumerate(jacobians(model.double(), x.double())):
        s = np.linalg.svd(j.numpy(), compute_uv=False)
        expected = np.array([(s > e).sum(axis=1).mean() for e in epsilons])
        np.testing.assert_allclose(lr.mean[l], expected, atol=0)


def test_relative_threshold_counts_against_largest_singular_value():
    s = torch.tensor([[10.0, 5.0, 0.5, 0.01]])
    assert epsilon_rank(s, [0.1, 0.01], relative=True).tolist() == [[2, 3]]
    assert epsilon_rank(s, [0.1, 0.01], relative=False).tolist() == [[3, 3]]


def test_low_rank_first_layer_caps_every_layer():
    model = MLP((20, 30, 30, 30), seed=0).double()
    with torch.no_grad():
        u = torch.randn(30, 3, dtype=torch.float64)
        model.layers[0].weight.copy_(u @ torch.randn(3, 20, dtype=torch.float64))
    lr = local_rank(model, torch.randn(8, 20, dtype=torch.float64), 1e-8)
    assert lr.mean.max() <= 3


def test_standard_error_is_that_of_the_per_sample_ranks():
    model = MLP((30, 40, 5), seed=2)
    x = torch.randn(50, 30)
    lr = local_rank(model, x, 0.5)
    per_sample = (torch.stack([torch.linalg.svdvals(j) for j in jacobians(model, x)[0]]) > 0.5).sum(1).double()
    assert lr.mean[0, 0] == pytest.approx(per_sample.mean().item())
    assert lr.sem[0, 0] == pytest.approx((per_sample.std() / np.sqrt(50)).item())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epsilons": 0.0}, "ε=0.0"),
        ({"epsilons": -1.0}, "ε=-1.0"),
        ({"epsilons": ()}, "epsilons is empty"),
        ({"epsilons": 1.5, "relative": True}, "relative ε=1.5"),
        ({"method": "svd"}, "method='svd'"),
    ],
)
def test_bad_arguments_raise_clear_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        local_rank(MLP((4, 3, 2), seed=0), torch.randn(3, 4), **kwargs)


def test_bad_inputs_and_modules_raise_clear_value_errors():
    model = MLP((4, 3, 2), seed=0)
    with pytest.raises(ValueError, match=r"expected a non-empty batch \(N, 4\)"):
        local_rank(model, torch.randn(0, 4))
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        local_rank(model, torch.randn(3, 5))
    with pytest.raises(ValueError, match="exposes no pre-activations"):
        local_rank(nn.Conv1d(1, 1, 3), torch.randn(3, 4))
    with pytest.raises(ValueError, match="no nn.Linear"):
        local_rank(nn.Sequential(nn.ReLU()), torch.randn(3, 4))
    with pytest.raises(ValueError, match="closed_form"):
        local_rank(nn.Sequential(nn.Linear(4, 2)), torch.randn(3, 4), method="closed_form")
