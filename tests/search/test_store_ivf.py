"""The IVF index kind on real FAISS with clustered unit vectors (no database, no model)."""

import numpy as np
import pytest

from search.store import index_kind, index_new, index_search, ivf_lists_for, stored_vectors


def _clustered(n: int, d: int = 64, clusters: int = 50, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype("float32")
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, d)).astype("float32")
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.unit
def test_lists_grow_with_the_corpus_as_measured():
    assert ivf_lists_for(5_600_000) == 1024  # bench/scale.py's measured configuration
    assert ivf_lists_for(300_000) == 256
    assert ivf_lists_for(10) == 64 and ivf_lists_for(10**12) == 65_536


@pytest.mark.unit
def test_ivf_search_follows_this_process_settings_and_rescores_exactly(settings):
    x = _clustered(6000)
    ids = np.arange(len(x), dtype="int64") * 7 + 3
    index = index_new(x.shape[1], kind="ivf", training=x)
    index.add_with_ids(x, ids)
    assert index_kind(index) == "ivf"
    stored_ids, matrix = stored_vectors(index)
    assert (stored_ids == ids).all() and np.array_equal(matrix, x)

    queries = _clustered(40, seed=1)
    exact = np.argsort(-(queries @ x.T), axis=1)[:, :10]
    settings.SEARCH_IVF_RERANK = 200

    def recall(nprobe):
        settings.SEARCH_IVF_NPROBE = nprobe
        scores, found = index_search(index, queries, 10)
        # Whatever was found is scored exactly (the re-rank), not by 8-bit codes.
        rows = (found - 3) // 7
        assert np.allclose(scores, np.take_along_axis(queries @ x.T, rows, axis=1), atol=1e-5)
        return np.mean([len(set(r) & set(e)) / 10 for r, e in zip(rows, exact, strict=True)])

    assert recall(64) == 1.0  # every list scanned: exact
    assert recall(1) < 0.9  # one list of 64: the setting reached the search


@pytest.mark.unit
def test_ivf_needs_vectors_to_train_on():
    with pytest.raises(ValueError, match="training"):
        index_new(64, kind="ivf")
