"""linalg.unit_rows: each zero-row policy on a hand-made input with a zero row (numpy and torch)."""
import numpy as np
import pytest
import torch

from g2is_core.linalg import unit_rows

X = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]])


def test_keep_leaves_a_zero_row_zero():
    u = unit_rows(X, zero="keep")
    assert u.dtype == np.float32
    assert np.allclose(u, [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]])


def test_raise_names_the_zero_row():
    with pytest.raises(ValueError, match=r"1 row\(s\) are all zeros \(first: \[1\]\)"):
        unit_rows(X, zero="raise")
    with pytest.raises(ValueError, match="train features: 1 row"):
        unit_rows(X, zero="raise", what="train features")
    with pytest.raises(ValueError, match="NaN"):
        unit_rows(np.array([[1.0, np.nan], [1.0, 0.0]]), zero="raise")
    with pytest.raises(ValueError, match="2-D"):
        unit_rows(np.ones(3), zero="raise")
    u = unit_rows(X[[0, 2]], zero="raise")
    assert u.dtype == np.float32 and np.allclose(u, [[0.6, 0.8], [0.0, -1.0]])


def test_torch_rows_follow_the_same_policies():
    t = torch.tensor(X, dtype=torch.float32)
    u = unit_rows(t, zero="keep")
    assert isinstance(u, torch.Tensor) and u.dtype == torch.float32
    assert torch.allclose(u, torch.tensor([[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]]))
    with pytest.raises(ValueError, match="all zeros"):
        unit_rows(t, zero="raise")


def test_unknown_policy_is_an_error():
    with pytest.raises(ValueError, match="zero-row policy"):
        unit_rows(X, zero="skip")
