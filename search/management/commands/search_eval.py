import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError

from allthepatents.commands import ProgressCommand
from patents.records import jsonl_lines
from search.embedder_training import SPLITS
from search.evaluation import eval_cases_load, eval_distractors_load, search_eval_run

FUSION_VARIANTS = {
    "rrf_k60": {"k": 60, "weights": [1.0, 1.0]},
    **{
        f"a{a:.2f}-m{m:.2f}": {"alpha": a, "claim_margin": m}
        for a in (0.6, 0.7, 0.8, 0.9, 1.0)
        for m in (0.0, 0.05, 0.1, 0.15, 0.2)
    },
}


class Command(ProgressCommand):
    help = (
        "Recall@1, recall@10 and MRR of keyword, dense and hybrid ranking on a scratch store: "
        "each query is a patent's first claim, the answer that patent (title + abstract)."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--limit", type=int)
        parser.add_argument(
            "--split",
            choices=("all", *SPLITS),
            default="all",
            help="queries from this split of `train_embedder` (by patent id); "
            "report on test, tune on dev, never on train",
        )
        parser.add_argument("--distractors", type=Path, help="JSON Lines of other patents")
        parser.add_argument("--distractor-count", type=int, default=10_000)
        parser.add_argument(
            "--distractor-claims",
            action="store_true",
            help="distractors keep their claims (keyword index and claim vectors), as on the site",
        )
        parser.add_argument("--model", help="embedding model (name or directory)")
        parser.add_argument(
            "--query-chunk-words",
            type=int,
            help="embed long queries in pieces of this many words (default: the setting)",
        )
        parser.add_argument("--cache-dir", type=Path, help="keep embeddings here between runs")
        parser.add_argument(
            "--rare-terms",
            action="store_true",
            help="keyword queries send their rarest terms only (SEARCH_KEYWORD_TERMS, "
            "SEARCH_KEYWORD_COMMON_SHARE), as the site does past 50,000 documents",
        )
        parser.add_argument(
            "--keyword-engine",
            choices=("fts5", "tantivy"),
            default="fts5",
            help="the keyword engine measured: SQLite FTS5 (the database engine of a SQLite "
            "site) or Tantivy (SEARCH_KEYWORD_ENGINE=tantivy)",
        )
        parser.add_argument(
            "--keyword-only",
            action="store_true",
            help="the keyword side alone (no embedder, in seconds)",
        )
        parser.add_argument("--json", action="store_true")
        parser.add_argument("--variants", action="store_true", help="also other fusion settings")

    def handle(self, *args, path, limit, split, variants, **options):
        as_json = options["json"]
        if not path.exists():
            raise CommandError(f"{path}: no such file")
        cases = eval_cases_load((line for _, line in jsonl_lines(path)), limit=limit, split=split)
        if not cases:
            raise CommandError("no patents with complete claims in that file and split")
        distractors = []
        if options["distractors"]:
            if not options["distractors"].exists():
                raise CommandError(f"{options['distractors']}: no such file")
            distractors = eval_distractors_load(
                (line for _, line in jsonl_lines(options["distractors"])),
                count=options["distractor_count"],
                exclude={c.source_id for c in cases},
            )
        model = options["model"] or settings.EMBEDDING_MODEL
        hybrid = {
            "hybrid": {
                "alpha": settings.SEARCH_HYBRID_ALPHA,
                "claim_margin": settings.SEARCH_CLAIM_MARGIN,
            }
        }
        fusions = {**hybrid, **FUSION_VARIANTS} if variants else hybrid
        bar = self.progress(total=len(cases), unit=" queries", disable=as_json)
        results = search_eval_run(
            cases,
            distractors=distractors,
            distractor_claims=options["distractor_claims"],
            model=model,
            progress=bar.update,
            fusions=fusions,
            cache_dir=options["cache_dir"],
            query_chunk_words=options["query_chunk_words"],
            rare_terms=options["rare_terms"],
            keyword_engine=options["keyword_engine"],
            keyword_only=options["keyword_only"],
        )
        bar.close()
        setup = {
            "queries": len(cases),
            "split": split,
            "distractors": len(distractors),
            "distractor_claims": options["distractor_claims"],
            "model": model,
            "rare_terms": options["rare_terms"],
            "keyword_engine": options["keyword_engine"],
            "query_chunk_words": (
                settings.SEARCH_QUERY_CHUNK_WORDS
                if options["query_chunk_words"] is None
                else options["query_chunk_words"]
            ),
        }
        if as_json:
            self.stdout.write(json.dumps({"setup": setup, "results": results}))
            return
        self.stdout.write(
            f"{len(cases)} queries (first claims, split {split}) against their title + abstract"
            f", {len(distractors)} distractors"
            + (" with claims" if options["distractor_claims"] else "")
            + f"; embedder {model}; keyword engine {options['keyword_engine']}"
        )
        self.stdout.write(f"{'ranking':18s} {'recall@1':>9s} {'recall@10':>10s} {'MRR':>7s}")
        for name, m in results.items():
            self.stdout.write(
                f"{name:18s} {m['recall@1']:9.3f} {m['recall@10']:10.3f} {m['mrr']:7.3f}"
            )
