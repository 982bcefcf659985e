"""Folds and orders drawn from row keys: they follow the rows in any input order."""

import numpy as np

from auditors.features.row_keys import KeyedFolds, keyed_order


def _folds_by_key(keys, classes, n_splits=5):
    folds = KeyedFolds(keys, n_splits).fold_of_rows(classes)
    return dict(zip(keys, folds))


def test_a_row_keeps_its_fold_in_any_input_order():
    keys = np.array([f"row{i}" for i in range(200)])
    classes = np.arange(200) % 3
    order = np.random.default_rng(0).permutation(200)
    assert _folds_by_key(keys, classes) == _folds_by_key(keys[order], classes[order])
    assert keys[keyed_order(keys)].tolist() == keys[order][keyed_order(keys[order])].tolist()


def test_folds_partition_the_rows_by_class_and_copies_share_one():
    keys = np.array([f"row{i}" for i in range(100)] + ["row3"] * 4)  # four more copies of row3
    classes = np.r_[np.arange(100) % 2, [1, 1, 1, 1]]
    splits = list(KeyedFolds(keys, 5).split(y=classes))
    held_out = np.concatenate([test for _, test in splits])
    assert sorted(held_out) == list(range(104))  # every row held out exactly once
    for train, test in splits:
        assert not set(keys[train]) & set(keys[test])  # a copy never trains its twin's model
        assert abs((classes[test] == 0).sum() - 10) <= 1  # stratified: 50 rows of class 0
