"""The 8x8 handwritten digits (1797 images, the UCI "optical recognition of handwritten digits" test set)
that scikit-learn ships inside its wheel as ``sklearn/datasets/data/digits.csv.gz``: read from that file
(scikit-learn itself is never imported, nothing is downloaded), pixels scaled from 0..16 to [0, 1].

scikit-learn is an optional dependency (``pip install 'popgrad[digits]'``): it is the only well-kept package
found that ships these data; where it is missing the loader says so in one line.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..._validation import InvalidArgument, check_integer, check_real

__all__ = ["DigitsTask", "digits_data", "digits_task", "DIGITS_FILE"]

#: where the data lie inside the scikit-learn package
DIGITS_FILE = ("datasets", "data", "digits.csv.gz")


class DigitsUnavailable(InvalidArgument):
    """The digits data are not installed (scikit-learn, the optional extra ``popgrad[digits]``)."""


def _digits_path() -> Path:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DigitsUnavailable("the digits data ship with scikit-learn, which is not installed: pip install 'popgrad[digits]' (or scikit-learn)", "data")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*DIGITS_FILE)
    if not path.is_file():
        raise DigitsUnavailable(f"scikit-learn is installed but its digits file {str(path)!r} is missing", "data")
    return path


@lru_cache(maxsize=1)
def _read() -> tuple:
    raw = gzip.decompress(_digits_path().read_bytes())
    table = np.loadtxt(raw.decode("ascii").splitlines(), delimiter=",")
    if table.shape != (1797, 65) or table[:, :64].min() < 0 or table[:, :64].max() > 16:
        raise DigitsUnavailable(f"the digits file holds a table of shape {table.shape}, expected 1797 rows of 64 pixels (0..16) and a label", "data")
    images = np.ascontiguousarray(table[:, :64] / 16.0)
    labels = table[:, 64].astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels, hashlib.sha256(raw).hexdigest()[:16]


def digits_data() -> tuple:
    """All 1797 digits: ``(images, labels, digest)``.

    Returns
    -------
    images : ndarray (1797, 64)
        Pixels in [0, 1] (the file's 0..16 over 16), read-only.
    labels : ndarray (1797,) of int
        0..9.
    digest : str
        A hash of the file's content (keys the cached networks).

    Examples
    --------
    >>> images, labels, _ = digits_data()
    >>> images.shape, int(labels[:10].sum()), float(images.max())
    ((1797, 64), 45, 1.0)
    """
    return _read()


@dataclass(frozen=True)
class DigitsTask:
    """A classification task on some digits, split into training and test sets.

    Attributes
    ----------
    classes : tuple of int
        The digits of the task; digit ``classes[k]`` has label k.
    X_train, y_train, X_test, y_test : ndarray
        Images (rows of 64 pixels) and labels 0..K-1.
    transform : str
        'none', 'transpose' or 'noise' (the images shifted as a fine-tuning task).
    seed : int
        The split's (and the noise's) seed.
    """

    classes: tuple
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    transform: str
    seed: int

    @property
    def outputs(self) -> int:
        """K, the number of classes."""
        return len(self.classes)

    def describe(self) -> dict:
        """The task's parameters (JSON-ready)."""
        return {"classes": list(self.classes), "train": int(self.y_train.size), "test": int(self.y_test.size), "transform": self.transform, "seed": self.seed}


def digits_task(classes=(0, 1, 2, 3, 4), test_fraction: float = 0.3, transform: str = "none", seed: int = 0) -> DigitsTask:
    """The digits of ``classes``, relabelled 0..K-1 in that order, split at random (stratified by class).

    Parameters
    ----------
    classes : sequence of distinct int in 0..9, default (0, 1, 2, 3, 4)
    test_fraction : float in (0, 1), default 0.3
    transform : {'none', 'transpose', 'noise'}, default 'none'
        'transpose' mirrors each image across its diagonal; 'noise' adds N(0, 0.3^2) to every pixel (seeded).
    seed : int, default 0

    Returns
    -------
    DigitsTask

    Examples
    --------
    >>> task = digits_task((5, 6, 7, 8, 9), seed=0)
    >>> task.outputs, task.X_train.shape[1], sorted(set(task.y_test.tolist()))
    (5, 64, [0, 1, 2, 3, 4])
    """
    classes = tuple(check_integer(c, "classes", 0, 9) for c in classes)
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise InvalidArgument(f"classes must be at least two distinct digits, got {list(classes)}", "classes")
    test_fraction = check_real(test_fraction, "test_fraction", 0.0, 1.0, low_open=True)
    if test_fraction >= 1.0:
        raise InvalidArgument(f"test_fraction must lie in (0, 1), got {test_fraction}", "test_fraction")
    if transform not in ("none", "transpose", "noise"):
        raise InvalidArgument(f"transform must be one of 'none', 'transpose', 'noise', got {transform!r}", "transform")
    seed = check_integer(seed, "seed", 0, 2**63 - 1)
    images, labels, _ = digits_data()
    generator = np.random.default_rng(seed)
    train, test = [], []
    for label in classes:
        members = np.flatnonzero(labels == label)
        members = members[generator.permutation(members.size)]
        cut = int(round(test_fraction * members.size))
        test.append(members[:cut])
        train.append(members[cut:])
    train, test = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    relabel = np.full(10, -1)
    relabel[list(classes)] = np.arange(len(classes))
    X = np.array(images)
    if transform == "transpose":
        X = X.reshape(-1, 8, 8).transpose(0, 2, 1).reshape(-1, 64).copy()
    elif transform == "noise":
        X = X + 0.3 * np.random.default_rng([seed, 1]).standard_normal(X.shape)
    return DigitsTask(classes, X[train], relabel[labels[train]], X[test], relabel[labels[test]], transform, seed)
