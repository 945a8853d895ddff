"""The data one run uses: its splits with the profile's seeded subsets, and its mapping."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nbutils.config import RunConfig
from nbutils.data import Split, coarse_mapping, load_cifar, stratified_subset


@dataclass
class RunData:
    """The run's splits (subset applied) and its fine -> super-class mapping."""

    train: Split
    test: Split
    fine_to_coarse: np.ndarray

    def labels(self, model: str, split: str) -> np.ndarray:
        """Labels `model` is trained on: super-classes for 'coarse', fine ones for 'baseline'."""
        fine = getattr(self, split).labels
        return self.fine_to_coarse[fine] if model == "coarse" else fine

    def num_classes(self, model: str) -> int:
        """Output size of `model`'s head."""
        return int(self.fine_to_coarse.max() + 1) if model == "coarse" else len(self.fine_to_coarse)


def load_run_data(cfg: RunConfig) -> RunData:
    """Load the data a run uses, with the seeded stratified subsets of its profile.

    With `val_per_class`, that many images per class are carved out of train and stand in for
    the test split, so a recipe can be chosen without looking at the test set.
    """
    train, test = load_cifar(cfg.data_root, cfg.dataset)
    if cfg.val_per_class:
        val = _subset("val_per_class", train, cfg.val_per_class, cfg.seed + 1)
        rest = np.setdiff1d(np.arange(len(train)), val)
        train, test = train.take(rest), train.take(val)
    if cfg.train_per_class:
        train = train.take(_subset("train_per_class", train, cfg.train_per_class, cfg.seed))
    if cfg.test_per_class:
        test = test.take(_subset("test_per_class", test, cfg.test_per_class, cfg.seed))
    return RunData(train, test, coarse_mapping(cfg.mapping, cfg.dataset, train))


def _subset(name: str, split: Split, per_class: int, seed: int) -> np.ndarray:
    """Seeded stratified indices, refusing more per class than the split holds."""
    fewest = int(np.bincount(split.labels).min()) if len(split) else 0
    if per_class > fewest:
        raise ValueError(f"{name}: must be at most {fewest} (the smallest class), got {per_class}")
    return stratified_subset(split.labels, per_class, seed)
