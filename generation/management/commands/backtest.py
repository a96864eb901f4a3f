import datetime as dt
import json
import time
from pathlib import Path

from django.core.management.base import CommandError

from allthepatents.commands import ProgressCommand
from generation.backtest import BacktestError, backtest_run, model_cutoff_check
from patents.records import jsonl_lines


class Command(ProgressCommand):
    help = (
        "Would a generator trained only on patents before --cutoff have anticipated the ones "
        "after it? Generates --count inventions and scores every later patent against them "
        "(generation/backtest.py); the figures go to /stats/."
    )

    def add_arguments(self, parser):
        parser.add_argument("--data", type=Path, required=True, help="JSON Lines patents")
        parser.add_argument("--cutoff", type=dt.date.fromisoformat, required=True)
        parser.add_argument(
            "--model", type=Path, required=True, help="trained with train_patent_model --cutoff"
        )
        parser.add_argument("--count", type=int, default=200)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--max-new-tokens", type=int, default=768)
        parser.add_argument("--out", type=Path, help="also write the full report here")
        parser.add_argument("--no-record", action="store_true", help="keep it off /stats/")

    def handle(self, *args, data, cutoff, model, count, seed, **options):
        from generation.backends import ModelLoadError, TransformersBackend
        from generation.services import backtest_record

        if not data.exists():
            raise CommandError(f"{data}: no such file")
        if count < 1:
            raise CommandError("--count must be at least 1")
        started = time.monotonic()
        try:
            model_cutoff_check(model, cutoff)
            backend = TransformersBackend(str(model))
            records = []
            for _, line in jsonl_lines(data):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
            report = backtest_run(
                records=records,
                cutoff=cutoff,
                backend=backend,
                count=count,
                seed=seed,
                max_new_tokens=options["max_new_tokens"],
            )
        except (BacktestError, ModelLoadError) as exc:
            raise CommandError(str(exc)) from exc
        report["seconds"] = round(time.monotonic() - started, 1)
        report["model"] = str(model)
        if options["out"]:
            options["out"].write_text(json.dumps(report, indent=2))
        if not options["no_record"]:
            backtest_record(model=str(model), report=report)
        shown = {k: v for k, v in report.items() if k != "best_pairs"}
        self.stdout.write(json.dumps(shown, indent=2))
        for pair in report.get("best_pairs", [])[:5]:
            self.stdout.write(
                f"\n{pair['score']:.3f} {'HIT ' if pair['hit'] else ''}{pair['later_patent']} "
                f"({pair['later_date']}): {pair['later_claim'][:200]}\n"
                f"      generated (seed {pair['generated_seed']}): "
                f"{pair['generated_claim_1'][:200]}"
            )
