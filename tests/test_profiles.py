"""Chapter parameters: profiles fill gaps, explicit values win, bad values are named."""

from __future__ import annotations

import pytest

from localrank_utils.profiles import PROFILE_NAMES, PROFILES, resolve


def test_profiles_resolve_and_explicit_values_override(monkeypatch):
    monkeypatch.delenv("LOCALRANK_PROFILE", raising=False)
    assert resolve("mnist").profile == "book"
    monkeypatch.setenv("LOCALRANK_PROFILE", "quick")
    p = resolve("mnist", steps=123)
    assert p.profile == "quick" and p.steps == 123 and p.n_rank_points == PROFILES["mnist"]["quick"]["n_rank_points"]
    assert resolve("mnist", "paper").steps == 1_000_000
    assert p.differs_from_profile() == ["steps"] and p.differs_from_profile(ignoring=("steps",)) == []
    assert resolve("mnist", "quick", device=None).given == frozenset()


def test_every_profile_of_every_chapter_is_valid():
    for chapter, profiles in PROFILES.items():
        assert set(profiles) == set(PROFILE_NAMES)
        for name in PROFILE_NAMES:
            resolve(chapter, name)
        assert len({frozenset(profiles[n]) for n in PROFILE_NAMES}) == 1, f"{chapter}: profiles differ in parameters"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"steps": -5}, "steps=-5 is out of range"),
        ({"steps": 2.5}, "steps=2.5 must be a whole number"),
        ({"lr": 0}, r"lr=0.0 must lie in \(0.0"),
        ({"weight_decay": -0.1}, "weight_decay=-0.1 must be >= 0"),
        ({"epsilon": "small"}, "epsilon='small' must be a number"),
        ({"optimizer": "rmsprop"}, "optimizer='rmsprop' is not one of"),
        ({"device": "gpu"}, "device='gpu' is not one of"),
        ({"compare_weight_decays": 0.1}, "must be a non-empty list"),
        ({"n_train": 70_000}, "n_train=70000 is out of range"),
        ({"max_corr": 0.5}, r"has no parameter\(s\) \['max_corr'\]"),
    ],
)
def test_bad_values_are_refused_with_their_name(given, message):
    with pytest.raises(ValueError, match=message):
        resolve("mnist", "quick", **given)


def test_unknown_profile_and_chapter():
    with pytest.raises(ValueError, match="profile='fast' is unknown"):
        resolve("mnist", "fast")
    with pytest.raises(ValueError, match="unknown chapter"):
        resolve("fig9")


def test_custom_runs_get_their_own_results_folder():
    assert resolve("mnist", "quick").run_label == "quick"
    custom = resolve("mnist", "quick", steps=10).run_label
    assert custom.startswith("quick-custom-") and custom != resolve("mnist", "quick", steps=11).run_label
    assert custom == resolve("mnist", "quick", steps=10).run_label


def test_reversed_beta_range_names_both_parameters():
    with pytest.raises(ValueError, match=r"beta_min=500.0 must be below beta_max=100.0"):
        resolve("gaussian_ib", "quick", beta_min=500, beta_max=100)
