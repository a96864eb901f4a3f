import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from patents.services import jsonl_lines
from search.evaluation import eval_cases_load, search_eval_run

FUSION_VARIANTS = {
    "rrf_k60": {"k": 60, "weights": [1.0, 1.0]},
    "rrf_k10": {"k": 10, "weights": [1.0, 1.0]},
    "rrf_dense2x": {"k": 60, "weights": [2.0, 1.0]},
    **{f"convex_a{a:.2f}": {"alpha": a} for a in (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)},
}


class Command(BaseCommand):
    help = (
        "Recall@1, recall@10 and MRR of keyword, dense and hybrid ranking, on a scratch "
        "store of the given patents (title + abstract indexed, first claim as the query)."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--limit", type=int)
        parser.add_argument("--json", action="store_true")
        parser.add_argument(
            "--variants", action="store_true", help="also report other fusion settings"
        )

    def handle(self, *args, path, limit, variants, **options):
        as_json = options["json"]
        if not path.exists():
            raise CommandError(f"{path}: no such file")
        cases = eval_cases_load((line for _, line in jsonl_lines(path)), limit=limit)
        if not cases:
            raise CommandError("no patents with complete claims in that file")
        hybrid = {"hybrid": {"alpha": settings.SEARCH_HYBRID_ALPHA}}
        fusions = {**hybrid, **FUSION_VARIANTS} if variants else hybrid
        bar = tqdm(total=len(cases), unit=" queries", disable=as_json, file=self.stderr._out)
        results = search_eval_run(cases, progress=bar.update, fusions=fusions)
        bar.close()
        if as_json:
            self.stdout.write(json.dumps(results))
            return
        self.stdout.write(f"{len(cases)} patents (title + abstract), queried by first claim\n")
        self.stdout.write(f"{'ranking':18s} {'recall@1':>9s} {'recall@10':>10s} {'MRR':>7s}")
        for name, m in results.items():
            self.stdout.write(
                f"{name:18s} {m['recall@1']:9.3f} {m['recall@10']:10.3f} {m['mrr']:7.3f}"
            )
