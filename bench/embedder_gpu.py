"""Embedder recipes compared on a GPU: the #12 training variants, measured the way
`search_eval` measures, where a CPU would take hours per variant.

Two steps. ``prepare`` runs here (Django, the shared data): it writes the train pairs, the
dev and test queries, the distractors, the keyword rankings of every query (they do not
depend on the embedder) and a 16-bit copy of the base model to one folder (about 50 MB,
small enough to travel to a lent GPU machine). ``run`` needs only torch and
sentence-transformers (and `datasets` for the trainer): it trains each variant through
``search.embedder_training.embedder_train`` (the code behind ``manage.py train_embedder``),
embeds, and ranks through ``search.ranking`` (the code behind the site and `search_eval`).

    .venv/bin/python bench/embedder_gpu.py prepare --data ../shared/data/patents.jsonl.gz \\
        --out var/gpu
    python3 bench/embedder_gpu.py run --prepared var/gpu --out "$OUT" \\
        --variants stock,e1,e1-hn,e2-hn

Differences from `search_eval` on a CPU, none of which touch the ranking: inner products
are exact on the GPU (as FAISS's flat index), documents are embedded in fp32 (the site's
bulk path is bf16 where the CPU has it), and the base weights travel as fp16 (cosine
against the fp32 originals is printed by ``prepare``).
"""

import argparse
import gzip
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DISTRACTORS = 10_000
SPLITS = ("dev", "test")
# (corpus name, distractors, distractors keep their claims)
CORPORA = (("alone", False, False), ("distractors", True, False), ("claims", True, True))
# Distractors outside the train split only: none of them was ever a training text, even as a
# mined negative (the "corpus" recipes mine the train split's patents without claims).
UNSEEN = ("unseen", True, False)
VARIANTS = {
    "stock": None,
    "e1": {"epochs": 1, "hard_negatives": False},
    "e1-hn": {"epochs": 1, "hard_negatives": True},
    "e2": {"epochs": 2, "hard_negatives": False},
    "e2-hn": {"epochs": 2, "hard_negatives": True},
    "e1-hn-b64": {"epochs": 1, "hard_negatives": True, "batch_size": 64},
    "e3-hn": {"epochs": 3, "hard_negatives": True},
    # Session 6: learning rate, more negatives, a longer window, and weight averaging with
    # the base model (WiSE-FT: "wise" is the fine-tuned share).
    "e1-hn-lr1e4": {"epochs": 1, "hard_negatives": True, "learning_rate": 1e-4},
    "e1-hn-lr2e5": {"epochs": 1, "hard_negatives": True, "learning_rate": 2e-5},
    "e2-hn-lr2e5": {"epochs": 2, "hard_negatives": True, "learning_rate": 2e-5},
    "e1-hn3": {"epochs": 1, "hard_negatives": True, "negatives": 3},
    "e2-hn3": {"epochs": 2, "hard_negatives": True, "negatives": 3},
    "e1-hn-len384": {"epochs": 1, "hard_negatives": True, "max_seq_length": 384},
    "e1-hn-wise0.7": {"epochs": 1, "hard_negatives": True, "wise": 0.7},
    "e2-hn3-lr1e4": {"epochs": 2, "hard_negatives": True, "negatives": 3, "learning_rate": 1e-4},
    "e2-hn5": {"epochs": 2, "hard_negatives": True, "negatives": 5},
    "e3-hn3": {"epochs": 3, "hard_negatives": True, "negatives": 3},
    "e2-hn3-b64": {"epochs": 2, "hard_negatives": True, "negatives": 3, "batch_size": 64},
    # Session 7: negatives mined from the whole train split, patents without claims included
    # (embedder_corpus_load), and model soups (the weights of runs with other seeds averaged).
    "e2-hn3-corpus": {"epochs": 2, "hard_negatives": True, "negatives": 3, "corpus": True},
    "e2-hn5-corpus": {"epochs": 2, "hard_negatives": True, "negatives": 5, "corpus": True},
    "e2-hn3-soup3": {"epochs": 2, "hard_negatives": True, "negatives": 3, "soup": 3},
    "e2-hn3-corpus-soup3": {
        "epochs": 2,
        "hard_negatives": True,
        "negatives": 3,
        "corpus": True,
        "soup": 3,
    },
}
MAX_NEGATIVES = 5


def prepare(args) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "allthepatents.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import django

    django.setup()
    import numpy as np
    from django.conf import settings
    from sentence_transformers import SentenceTransformer

    from patents.records import jsonl_lines
    from search.embedder_training import (
        document_text,
        embedder_corpus_load,
        embedder_examples_load,
        patent_split,
    )
    from search.embeddings import OFFLINE_PACKAGE_NAME, embedding_model_source
    from search.evaluation import (
        EvalDoc,
        eval_cases_load,
        eval_distractors_load,
        keyword_index_build,
        keyword_ranked,
    )
    from search.text import query_chunks

    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    def lines():
        return (line for _, line in jsonl_lines(args.data))

    train = embedder_examples_load(lines(), split="train", extra_claims=args.extra_claims)
    cases = {split: eval_cases_load(lines(), split=split) for split in SPLITS}
    exclude = {c.source_id for split in SPLITS for c in cases[split]}
    distractors = eval_distractors_load(lines(), count=DISTRACTORS, exclude=exclude)
    words = settings.SEARCH_QUERY_CHUNK_WORDS
    data = {
        "settings": {
            "alpha": settings.SEARCH_HYBRID_ALPHA,
            "claim_margin": settings.SEARCH_CLAIM_MARGIN,
            "query_chunk_words": words,
            "extra_claims": args.extra_claims,
        },
        "train": train,
        "corpus": embedder_corpus_load(lines(), split="train"),
        "distractors": [
            {
                "doc": document_text(d.title, d.abstract),
                "claims": d.claims,
                "unseen": patent_split(d.source_id) != "train",
            }
            for d in distractors
        ],
        "splits": {},
    }
    for split in SPLITS:
        split_cases = cases[split]
        docs = [EvalDoc(t, a) for t, a in (c.doc_text for c in split_cases)]
        keyword = {}
        for corpus, with_distractors, with_claims in (*CORPORA, UNSEEN):
            extra = distractors if with_distractors else []
            if corpus == UNSEEN[0]:
                extra = [d for d in extra if patent_split(d.source_id) != "train"]
            db = keyword_index_build(docs + extra, with_claims=with_claims)
            keyword[corpus] = [keyword_ranked(db, c.query) for c in split_cases]
        data["splits"][split] = {
            "docs": [document_text(*c.doc_text) for c in split_cases],
            "queries": [query_chunks(c.query, max_words=words) for c in split_cases],
            "ids": [c.source_id for c in split_cases],
            "keyword": keyword,
        }
        print(f"{split}: {len(split_cases)} queries", flush=True)
    with gzip.open(out / "data.json.gz", "wt", encoding="utf-8") as fh:
        json.dump(data, fh)
    source = embedding_model_source(OFFLINE_PACKAGE_NAME)
    model = SentenceTransformer(source, device="cpu")
    sample = [d["doc"] for d in data["distractors"][:64]]
    full = model.encode(sample, normalize_embeddings=True)
    model.half().save(str(out / "base-fp16"))
    back = SentenceTransformer(str(out / "base-fp16"), device="cpu").float()
    cos = (full * back.encode(sample, normalize_embeddings=True)).sum(axis=1)
    unseen = sum(d["unseen"] for d in data["distractors"])
    print(
        f"train pairs {len(train)}, corpus {len(data['corpus'])}, distractors "
        f"{len(distractors)} ({unseen} unseen); fp16 base against fp32: "
        f"cosine min {float(np.min(cos)):.5f}",
        flush=True,
    )


def _encode(model, texts, *, batch_size=256):
    import torch

    if not texts:
        return torch.zeros((0, 384), device=model.device)
    return model.encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_tensor=True,
        show_progress_bar=False,
    ).float()


def _queries(model, chunked):
    import torch

    flat = [p for chunks in chunked for p in chunks]
    vectors = _encode(model, flat)
    out, at = [], 0
    for chunks in chunked:
        mean = vectors[at : at + len(chunks)].mean(dim=0)
        out.append(mean / mean.norm().clamp_min(1e-12))
        at += len(chunks)
    return torch.stack(out)


def _dev_score(results: dict) -> float:
    """What --keep best maximises: dev hybrid recall@10 among distractors, without and
    with their claims (the two rows #12 sets a target on)."""
    rows = [results.get(f"dev/{c}", {}).get("hybrid", {}).get("recall@10") for c, _, _ in CORPORA]
    rows = [r for r in rows if r is not None]
    return sum(rows) / len(rows) if rows else 0.0


def _interpolate(model, base, share: float) -> None:
    """WiSE-FT: ``share`` of the fine-tuned weights plus the rest of the base's."""
    import torch

    with torch.no_grad():
        base_state = base.state_dict()
        for name, tensor in model.state_dict().items():
            if tensor.dtype.is_floating_point:
                tensor.mul_(share).add_(base_state[name].to(tensor.device), alpha=1 - share)


def _soup(model, folders: list[Path]) -> None:
    """The mean of the weights saved in ``folders`` (runs of one recipe with other seeds
    from the same base: a "model soup"), written into ``model``."""
    import torch
    from sentence_transformers import SentenceTransformer

    with torch.no_grad():
        state = model.state_dict()
        for name in state:
            if state[name].dtype.is_floating_point:
                state[name].zero_()
        for folder in folders:
            other = SentenceTransformer(str(folder), device="cpu").state_dict()
            for name, tensor in state.items():
                if tensor.dtype.is_floating_point:
                    tensor.add_(other[name].to(tensor.device), alpha=1 / len(folders))


def _variant_model(work: Path, base: Path, variant: str, device: str):
    """A variant as trained under ``work`` (the base for "stock"): its first seed's weights,
    averaged with the other seeds' for a soup, then WiSE-FT with the base."""
    from sentence_transformers import SentenceTransformer

    recipe = VARIANTS[variant]
    if recipe is None:
        return SentenceTransformer(str(base), device=device)
    model = SentenceTransformer(str(work / variant / "seed0"), device=device)
    if recipe.get("soup", 1) > 1:
        _soup(model, [work / variant / f"seed{k}" for k in range(recipe["soup"])])
    if "wise" in recipe:
        _interpolate(model, SentenceTransformer(str(base), device=device), recipe["wise"])
    return model


def _split_weights(folder: Path, *, part_bytes: int = 15 * 2**20) -> None:
    """model.safetensors cut into model.safetensors.partNN (joined with cat on return)."""
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    for i in range(0, len(data), part_bytes):
        (folder / f"model.safetensors.part{i // part_bytes:02d}").write_bytes(
            data[i : i + part_bytes]
        )
    weights.unlink()


def fusion_grid(conf: dict, grid: bool) -> dict:
    """The site's fusion, and with ``grid`` the neighbouring settings to tune on dev."""
    fusions = {"hybrid": {"alpha": conf["alpha"], "claim_margin": conf["claim_margin"]}}
    if grid:
        for alpha in (0.7, 0.8, 0.9, 1.0):
            for margin in (0.05, 0.1, 0.15, 0.2, 0.3):
                fusions[f"a{alpha:.1f}-m{margin:.2f}"] = {"alpha": alpha, "claim_margin": margin}
    return fusions


def evaluate(model, data, *, smoke: bool = False, grid: bool = False) -> dict:
    """search_eval's numbers for each split and corpus, with this model (``smoke``: the
    first 40 queries of each split, without distractors, to try the code on a CPU)."""
    import torch

    from search.ranking import eval_query_ranks, retrieval_metrics

    conf = data["settings"]
    distractors = [] if smoke else data["distractors"]
    distractor_docs = _encode(model, [d["doc"] for d in distractors])
    claim_texts, claim_owner_d = [], []
    for i, d in enumerate(distractors):
        for text in d["claims"]:
            claim_texts.append(text)
            claim_owner_d.append(i)
    distractor_claims = _encode(model, claim_texts)
    fusions = fusion_grid(conf, grid)
    results = {}
    for split, block in data["splits"].items():
        own = _encode(model, block["docs"])
        queries = _queries(model, block["queries"][: 40 if smoke else None])
        n = len(block["docs"])
        for corpus, with_distractors, with_claims in (*CORPORA, UNSEEN):
            if smoke and with_distractors:
                continue
            extra = distractor_docs
            if corpus == UNSEEN[0]:
                extra = distractor_docs[[i for i, d in enumerate(distractors) if d["unseen"]]]
            docs = torch.cat([own, extra]) if with_distractors else own
            scores, ids = (queries @ docs.T).topk(min(100, docs.shape[0]), dim=1)
            scores, ids = scores.cpu().numpy(), ids.cpu().numpy()
            claim_scores = claim_ids = None
            owners = [n + i for i in claim_owner_d]
            if with_claims and claim_texts:
                depth = min(800, distractor_claims.shape[0])
                cs, ci = (queries @ distractor_claims.T).topk(depth, dim=1)
                claim_scores, claim_ids = cs.cpu().numpy(), ci.cpu().numpy()
            ranks = {"keyword": [], "dense": [], **{name: [] for name in fusions}}
            for q in range(queries.shape[0]):
                row = eval_query_ranks(
                    target=q,
                    dense_ids=ids[q],
                    dense_scores=scores[q],
                    claim_ids=None if claim_ids is None else claim_ids[q],
                    claim_scores=None if claim_scores is None else claim_scores[q],
                    claim_owner=owners,
                    keyword_scored=[tuple(k) for k in block["keyword"][corpus][q]],
                    fusions=fusions,
                    alpha=conf["alpha"],
                    claim_margin=conf["claim_margin"],
                )
                for name, rank in row.items():
                    ranks[name].append(rank)
            results[f"{split}/{corpus}"] = {name: retrieval_metrics(r) for name, r in ranks.items()}
    return results


def run(args) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    from search.embedder_training import embedder_train, hard_negatives_mine

    started_all = time.monotonic()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    print(f"device {name}; torch {torch.__version__}", flush=True)
    with gzip.open(args.prepared / "data.json.gz", "rt", encoding="utf-8") as fh:
        data = json.load(fh)
    work = Path(args.work)
    base = work / "base"
    if not (base / "config.json").exists():  # fp16 on the wire, fp32 to train from
        SentenceTransformer(str(args.prepared / "base-fp16"), device="cpu").float().save(str(base))
    examples = [tuple(e) for e in data["train"]][: 48 if args.smoke else None]
    pairs = [(claim, doc) for _, claim, doc in examples]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"device": name, "train_pairs": len(pairs), "settings": data["settings"]}
    mined: dict[bool, list] = {}  # with the corpus or without: mined once each
    best = (-1.0, None)
    for variant in args.variants.split(","):
        recipe = VARIANTS[variant]
        t0 = time.monotonic()
        entry = {"recipe": recipe}
        if recipe is None:
            model = SentenceTransformer(str(base), device=device)
        else:
            with_corpus = bool(recipe.get("corpus"))
            if recipe.get("hard_negatives") and with_corpus not in mined:
                miner = SentenceTransformer(str(base), device=device)
                miner.max_seq_length = 128  # as base_encoder
                m0 = time.monotonic()
                mined[with_corpus] = hard_negatives_mine(
                    examples,
                    encode=lambda texts, m=miner: _encode(m, texts).cpu().numpy(),
                    count=MAX_NEGATIVES,
                    corpus=data["corpus"] if with_corpus else None,
                )
                report[f"mining_seconds{'_corpus' if with_corpus else ''}"] = round(
                    time.monotonic() - m0, 1
                )
                del miner
            count = recipe.get("negatives", 1)
            negatives = mined.get(with_corpus) if recipe.get("hard_negatives") else None
            seconds = 0.0
            for k in range(recipe.get("soup", 1)):
                trained = embedder_train(
                    pairs=pairs,
                    negatives=[n[:count] for n in negatives] if negatives else None,
                    out=work / variant / f"seed{k}",
                    base=str(base),
                    epochs=recipe["epochs"],
                    batch_size=recipe.get("batch_size", 32),
                    learning_rate=recipe.get("learning_rate", 5e-5),
                    max_seq_length=recipe.get("max_seq_length", 256),
                    seed=13 + k,
                    bf16=device == "cuda",
                )
                seconds += trained["seconds"]
            entry["training_seconds"] = round(seconds, 1)
            model = _variant_model(work, base, variant, device)

        entry["results"] = evaluate(model, data, smoke=args.smoke)
        score = _dev_score(entry["results"])
        if args.keep in (variant, "best") and score > best[0]:
            # fp16, in parts under the 16 MiB a file may bring back; the rest of the folder
            # is the base's (configs, tokenizer) and stays behind.
            best = (score, variant)
            kept = out / "model"
            shutil.rmtree(kept, ignore_errors=True)
            model.half().save(str(kept), safe_serialization=True)
            _split_weights(kept)
            for path in kept.rglob("*"):
                if path.is_file() and ".part" not in path.name:
                    path.unlink()
            model.float()
            report["kept"] = {"variant": variant, "dev_score": score}
        entry["seconds"] = round(time.monotonic() - t0, 1)
        report[variant] = entry
        (out / "embedder_gpu.json").write_text(json.dumps(report, indent=1))
        print(f"== {variant} ({entry['seconds']} s)", flush=True)
        for key, metrics in entry["results"].items():
            print(
                f"  {key:18s} "
                + "  ".join(
                    f"{m}: R@1 {v['recall@1']:.3f} R@10 {v['recall@10']:.3f} MRR {v['mrr']:.3f}"
                    for m, v in metrics.items()
                    if m in ("keyword", "dense", "hybrid")
                ),
                flush=True,
            )
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    if args.grid and best[1]:  # fusion settings around the site's, for the best recipe
        model = _variant_model(work, base, best[1], device)
        report["kept"]["grid"] = evaluate(model, data, smoke=args.smoke, grid=True)
        (out / "embedder_gpu.json").write_text(json.dumps(report, indent=1))
        print(f"== grid for {best[1]} done", flush=True)
    print(f"all done in {time.monotonic() - started_all:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/patents.jsonl.gz")
    p.add_argument("--out", type=Path, default=ROOT / "var/gpu")
    p.add_argument("--extra-claims", type=int, default=2, help="as train_embedder's default")
    r = sub.add_parser("run")
    r.add_argument("--prepared", type=Path, default=ROOT / "var/gpu")
    r.add_argument("--out", default=os.environ.get("OUT", "var/gpu-out"))
    r.add_argument("--work", default="/tmp/embedder-gpu")
    r.add_argument("--variants", default="stock,e1,e1-hn,e2-hn")
    r.add_argument("--grid", action="store_true", help="also fusion settings around the site's")
    r.add_argument(
        "--keep", help="bring this variant's weights back (fp16, in parts), or the best on dev"
    )
    r.add_argument("--smoke", action="store_true", help="a few pairs and queries (CPU check)")
    args = parser.parse_args()
    prepare(args) if args.cmd == "prepare" else run(args)


if __name__ == "__main__":
    main()
