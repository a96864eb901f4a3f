"""MinHash of a patent's text: word shingles, signatures and LSH bands. Pure functions
with no Django import, so that a spawned process can compute an import's bands while the
importing process writes (patents/importing.py); patents/nearcopy.py stores and queries them.
"""

import re
import zlib

SHINGLE = 5
PERMUTATIONS = 128
BANDS = 64  # 2 rows a band: a pair at Jaccard 0.3 shares a band with probability 0.998
ROWS = PERMUTATIONS // BANDS
JACCARD_NEAR_COPY = 0.2
# Cosine of MiniLM title+abstract vectors (bench/nearcopy.py --embedding, 12,607 patents):
# nearest distinct patent p50 0.71, but p99 1.0 (continuations share abstracts verbatim);
# copies with every 5th word replaced: median 0.88, 5th percentile 0.77. The default 0.95
# (NEAR_COPY_EMBEDDING_THRESHOLD) flags near-verbatim rewordings only.
_MERSENNE = (1 << 61) - 1
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def _coefficients():
    import numpy as np

    rng = np.random.default_rng(20261123)  # fixed: stored bands must stay comparable
    a = rng.integers(1, _MERSENNE, PERMUTATIONS, dtype=np.uint64)
    b = rng.integers(0, _MERSENNE, PERMUTATIONS, dtype=np.uint64)
    return a, b


_COEF = None


def shingles(text: str) -> set[int]:
    words = _WORD.findall(text.lower())
    if len(words) < SHINGLE:
        return {zlib.crc32(" ".join(words).encode())} if words else set()
    return {
        zlib.crc32(" ".join(words[i : i + SHINGLE]).encode())
        for i in range(len(words) - SHINGLE + 1)
    }


def patent_text(*, abstract: str, claims: list[str]) -> str:
    return "\n".join([abstract, *claims])


def minhash_bands(shingle_set: set[int]) -> list[int]:
    import numpy as np

    global _COEF
    if _COEF is None:
        _COEF = _coefficients()
    if not shingle_set:
        return []
    a, b = _COEF
    x = np.fromiter(shingle_set, dtype=np.uint64)
    # (a*x + b) mod 2^61-1 per permutation; uint64 wraps, which keeps it a fine hash family.
    signature = ((np.outer(a, x) + b[:, None]) % np.uint64(_MERSENNE)).min(axis=1)
    rows = signature.reshape(BANDS, ROWS)
    return [zlib.crc32(row.tobytes()) for row in rows]


def jaccard(a: set[int], b: set[int]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def texts_bands(texts: list[str]) -> list[list[int]]:
    return [minhash_bands(shingles(text)) for text in texts]
