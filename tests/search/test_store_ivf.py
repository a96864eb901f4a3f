"""The IVF index kind on real FAISS with clustered unit vectors (no database, no model)."""

import numpy as np
import pytest

from search.store import (
    index_kind,
    index_new,
    index_search,
    ivf_codes,
    ivf_lists_for,
    stored_vectors,
)


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
    assert index_kind(index) == "ivf" and ivf_codes(index) == "pq4fs"
    stored_ids, matrix = stored_vectors(index)
    assert (stored_ids == ids).all() and np.array_equal(matrix, x)

    queries = _clustered(40, seed=1)
    exact = np.argsort(-(queries @ x.T), axis=1)[:, :10]
    settings.SEARCH_IVF_RERANK = 1600  # the default: 4-bit codes only pick candidates

    def recall(nprobe):
        settings.SEARCH_IVF_NPROBE = nprobe
        scores, found = index_search(index, queries, 10)
        # Whatever was found is scored exactly (the re-rank), not by the 4-bit codes.
        rows = (found - 3) // 7
        assert np.allclose(scores, np.take_along_axis(queries @ x.T, rows, axis=1), atol=1e-5)
        return np.mean([len(set(r) & set(e)) / 10 for r, e in zip(rows, exact, strict=True)])

    assert recall(64) == 1.0  # every list scanned: exact
    assert recall(1) < 0.9  # one list of 64: the setting reached the search


@pytest.mark.unit
def test_ivf_needs_vectors_to_train_on():
    with pytest.raises(ValueError, match="training"):
        index_new(64, kind="ivf")


@pytest.mark.unit
def test_a_verified_index_file_is_not_read_again_until_it_changes(settings, tmp_path, monkeypatch):
    """A worker publishing to a large index loads it on every update: the checksum of a
    file it has already verified is not computed again (at a million patents that re-read
    16.5 GB each time), but a file written in place since is checked, and caught."""
    import os
    import time

    from search import store

    settings.INDEX_DIR = tmp_path
    x = _clustered(500)
    index = index_new(x.shape[1])
    index.add_with_ids(x, np.arange(len(x), dtype="int64"))
    manifest = store.index_save(index, manifest={"embedding_model": "m", "dimension": 64})
    path = tmp_path / manifest["file"]
    hashed = []
    real_sha = store.file_sha256
    monkeypatch.setattr(store, "file_sha256", lambda p: hashed.append(p) or real_sha(p))
    monkeypatch.setattr(store, "_verified", set())

    # Just written: its mtime is within the clock's tick, so it is checked every time.
    store.index_load_checked(model="m")
    store.index_load_checked(model="m")
    assert len(hashed) == 2

    settled = time.time() - 60
    os.utime(path, (settled, settled))
    for _ in range(3):
        assert store.index_load_checked(model="m").ntotal == len(x)
    assert len(hashed) == 3  # once, then remembered

    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = os.urandom(64)
    path.write_bytes(bytes(data))
    os.utime(path, (settled + 1, settled + 1))
    with pytest.raises(store.IndexUnavailable, match="checksum"):
        store.index_load_checked(model="m")
    assert len(hashed) == 4
