import datetime as dt
import json
from pathlib import Path

from django.core.management.base import CommandError

from allthepatents.commands import ProgressCommand
from generation.training import SIZES, TrainConfig, train


class Command(ProgressCommand):
    help = (
        "Fine-tune (or train from scratch) a patent generator on both task orders; writes "
        "a model directory the generator registry loads as is, and a JSON report."
    )

    def add_arguments(self, parser):
        parser.add_argument("--base", required=True, help="hub id or directory (tokenizer)")
        parser.add_argument("--data", required=True, type=Path)
        parser.add_argument("--out", required=True, type=Path)
        parser.add_argument("--steps", type=int, default=1000)
        parser.add_argument("--batch-size", type=int, default=8)
        parser.add_argument(
            "--lr",
            type=float,
            help="peak learning rate (default 5e-4 to fine-tune, 2e-3 with --from-scratch)",
        )
        parser.add_argument("--max-length", type=int, default=512)
        parser.add_argument("--mix", type=float, default=0.5, help="share of top-down examples")
        parser.add_argument("--eval-fraction", type=float, default=0.05)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--from-scratch", action="store_true")
        parser.add_argument("--size", choices=list(SIZES), default="tiny")
        parser.add_argument("--checkpoint-every", type=int, default=200)
        parser.add_argument("--no-resume", action="store_true")
        parser.add_argument("--samples", type=int, default=20, help="per mode, for the hit rate")
        parser.add_argument("--sample-max-new-tokens", type=int, default=512)
        parser.add_argument("--limit", type=int, help="read at most this many patents")
        parser.add_argument("--threads", type=int, default=2)
        parser.add_argument(
            "--cutoff",
            type=dt.date.fromisoformat,
            help="read only patents published before this date (YYYY-MM-DD): a generator "
            "for `backtest`; undated ones and those only filed before it are left out",
        )

    def handle(self, *args, **o):
        if not o["data"].exists():
            raise CommandError(f"{o['data']}: no such file")
        if not 0 <= o["mix"] <= 1:
            raise CommandError("--mix must be between 0 and 1")
        cfg = TrainConfig(
            base=o["base"],
            data=o["data"],
            out=o["out"],
            steps=o["steps"],
            batch_size=o["batch_size"],
            # A small model trained from nothing tolerates (and needs) a higher rate.
            lr=o["lr"] or (2e-3 if o["from_scratch"] else 5e-4),
            max_length=o["max_length"],
            mix=o["mix"],
            eval_fraction=o["eval_fraction"],
            seed=o["seed"],
            from_scratch=o["from_scratch"],
            size=o["size"],
            checkpoint_every=o["checkpoint_every"],
            resume=not o["no_resume"],
            sample_count=o["samples"],
            sample_max_new_tokens=o["sample_max_new_tokens"],
            limit=o["limit"],
            threads=o["threads"],
            cutoff=o["cutoff"],
        )
        bar = self.progress(total=cfg.steps, unit=" steps")

        def show(step, loss):
            bar.n = step
            bar.set_postfix(loss=f"{loss:.3f}")
            bar.refresh()

        try:
            report = train(cfg, progress=show)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            bar.close()
        self.stdout.write(json.dumps(report, indent=2))
