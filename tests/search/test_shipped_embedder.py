"""The embedder a fresh install searches with is the project's own, checked on load."""

import shutil

import pytest


def test_the_default_embedder_is_the_shipped_patent_minilm(settings):
    from django.conf import settings as live

    from allthepatents.weights import weights_verify
    from search.embeddings import SHIPPED_EMBEDDER_NAME, embedding_model_source

    assert live.EMBEDDING_MODEL == SHIPPED_EMBEDDER_NAME  # no EMBEDDING_MODEL needed
    folder = embedding_model_source(SHIPPED_EMBEDDER_NAME)
    assert folder.endswith("models/patent-minilm") and weights_verify(folder)


def test_a_damaged_shipped_embedder_is_refused_by_name(tmp_path, monkeypatch):
    import search.embeddings as embeddings

    copy = tmp_path / "patent-minilm"
    shutil.copytree(embeddings.embedding_model_source(embeddings.SHIPPED_EMBEDDER_NAME), copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(embeddings.EmbeddingModelError, match="model.safetensors is damaged"):
        embeddings.embedder_get(str(copy))


def test_shipped_weights_load_in_fp32_and_rank_a_claim_to_its_patent():
    from search.embeddings import embed, embedder_get

    model = embedder_get()
    assert {p.dtype for p in model.parameters()} == {__import__("torch").float32}
    claim = "A bicycle saddle clamp comprising a lower jaw, an upper jaw and a bolt."
    docs = [
        "Adjustable bicycle saddle clamp. A clamp for a seat post with two jaws and a bolt.",
        "Self-stirring mug. A mug with a motor in its base that turns a magnetic stirrer.",
    ]
    scores = embed(docs) @ embed([claim])[0]
    assert scores[0] > scores[1] + 0.2
