"""VIB building blocks: the two KL forms agree and the β conventions are inverse to each other."""

import pytest
import torch

from localrank_utils.vib import (diagonal_gaussian_kl_to_standard, gaussian_kl, ib_beta, log_spaced, vib_beta,
                                 vib_objective)


def test_diagonal_kl_matches_the_general_gaussian_kl():
    g = torch.Generator().manual_seed(0)
    mean, log_var = torch.randn(7, 4, generator=g, dtype=torch.float64), torch.randn(7, 4, generator=g, dtype=torch.float64)
    general = gaussian_kl(mean, torch.diag_embed((0.5 * log_var).exp()), torch.zeros(4, dtype=torch.float64),
                          torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(diagonal_gaussian_kl_to_standard(mean, log_var), general, rtol=1e-12, atol=1e-12)
    assert diagonal_gaussian_kl_to_standard(torch.zeros(1, 4), torch.zeros(1, 4)).item() == 0.0


def test_beta_conventions_are_inverse_and_reject_bad_values():
    assert ib_beta(vib_beta(4.0)) == pytest.approx(4.0) and vib_beta(100.0) == pytest.approx(0.01)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="beta"):
            ib_beta(bad)


def test_log_spaced_and_objective():
    betas = log_spaced(1e-3, 1.0, 4)
    assert betas == pytest.approx((1e-3, 1e-2, 1e-1, 1.0))
    with pytest.raises(ValueError):
        log_spaced(1.0, 0.1, 3)
    assert vib_objective(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0]), 0.5).item() == pytest.approx(3.0)
