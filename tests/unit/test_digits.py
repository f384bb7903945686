"""scikit-learn's 8x8 digits as a federated image dataset."""

from __future__ import annotations

import numpy as np
import pytest

from fedflower.data import digits
from fedflower.errors import DataError


def test_digits_shapes_range_and_stratified_test_split() -> None:
    source = digits.load()
    assert source.x.shape == (1437, 8, 8, 1)
    assert source.x_test.shape == (360, 8, 8, 1)
    assert source.x.dtype == np.float32
    assert source.x.min() == 0.0
    assert source.x.max() == 1.0
    assert source.num_classes == 10
    test_counts = np.bincount(source.y_test, minlength=10)
    assert test_counts.min() >= 35  # every digit is in the test split, about 36 each
    assert source.input_shape == (8, 8, 1)


def test_digits_split_depends_on_the_seed_only() -> None:
    a, b, c = digits.load(seed=0), digits.load(seed=0), digits.load(seed=1)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.y, c.y)


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_digits_rejects_bad_test_fraction(fraction: float) -> None:
    with pytest.raises(DataError, match="test_fraction"):
        digits.load(test_fraction=fraction)
