"""selection.registry.cached_matrix: the representations/embeddings cache computes in parts, keeps each part as it
finishes, and a killed computation resumes at its first missing part with the same matrix as one uninterrupted run."""
import numpy as np
import pytest

from g2is_core.selection.registry import cached_matrix
from g2is_core.workspace import hash_config

FULL = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)


class Killed(Exception):
    pass


def test_a_killed_computation_resumes_at_its_first_missing_part(workspace):
    calls, seen = [], []

    def dies_at_row_6(a, b):
        if a >= 6:
            raise Killed
        calls.append((a, b))
        return FULL[a:b]

    with pytest.raises(Killed):
        cached_matrix(workspace, "reps", {"k": 1}, 10, dies_at_row_6, part_rows=3)
    assert calls == [(0, 3), (3, 6)]
    d = workspace.root / "reps" / hash_config({"k": 1})
    assert not (d / "matrix.npy").exists() and len(list(d.with_name(d.name + ".parts").iterdir())) == 2

    def rest(a, b):
        calls.append((a, b))
        return FULL[a:b]

    m = cached_matrix(workspace, "reps", {"k": 1}, 10, rest, progress=lambda f, msg: seen.append((f, msg)),
                      part_rows=3)
    assert np.array_equal(m, FULL) and m.dtype == np.float32
    assert calls[2:] == [(6, 9), (9, 10)]                     # the two kept parts were read, not recomputed
    assert [f for f, _ in seen] == pytest.approx([0.3, 0.6, 0.9, 1.0]) and seen[-1][1] == "reps: 10/10 records"
    assert workspace.is_complete(d) and not d.with_name(d.name + ".parts").exists()
    # complete: read back without computing; another ident is another matrix
    assert np.array_equal(cached_matrix(workspace, "reps", {"k": 1}, 10, lambda a, b: 1 / 0), FULL)
    assert cached_matrix(workspace, "reps", {"k": 2}, 10, lambda a, b: FULL[a:b] * 2)[1, 0] == 6.0


def test_a_part_of_the_wrong_size_is_a_bug_said_with_its_rows(workspace):
    with pytest.raises(AssertionError, match=r"compute\(0, 4\) gave 3 rows, not 4"):
        cached_matrix(workspace, "reps", {"k": 3}, 8, lambda a, b: FULL[a:b - 1], part_rows=4)


def test_an_empty_set_of_records_is_computed_not_cached(workspace):
    m = cached_matrix(workspace, "reps", {"k": 4}, 0, lambda a, b: np.zeros((b - a, 7)))
    assert m.shape == (0, 7) and not (workspace.root / "reps").exists()
