import os
import time
from pathlib import Path

from django.core.management.base import CommandError

from allthepatents.commands import ProgressCommand
from allthepatents.cpu import cpu_has_native_bf16
from patents.records import jsonl_lines
from search.embedder_training import (
    base_encoder,
    embedder_examples_load,
    embedder_train,
    hard_negatives_mine,
)
from search.embeddings import OFFLINE_PACKAGE_NAME


class Command(ProgressCommand):
    help = (
        "Fine-tunes the sentence embedder on (first claim, title + abstract) pairs of the "
        "train split of a JSON Lines file; EMBEDDING_MODEL=OUT makes the site use it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--data", type=Path, required=True)
        parser.add_argument("--out", type=Path, required=True)
        parser.add_argument("--base", default=OFFLINE_PACKAGE_NAME)
        # Two epochs with three mined negatives measured best on dev (bench/embedder_gpu.py,
        # session 6: hybrid recall@10 among distractors 0.916 against 0.906 for one epoch with
        # one negative); on a CPU it costs about four times as long.
        parser.add_argument("--epochs", type=int, default=2)
        parser.add_argument("--batch-size", type=int, default=32)
        parser.add_argument("--learning-rate", type=float, default=5e-5)
        parser.add_argument("--max-seq-length", type=int, default=256)
        parser.add_argument("--threads", type=int, default=os.cpu_count())
        parser.add_argument(
            "--bf16",
            choices=["auto", "on", "off"],
            default="auto",
            help="bfloat16 autocast; auto: where the CPU computes it natively (AVX512-BF16/AMX)",
        )
        parser.add_argument(
            "--extra-claims",
            type=int,
            default=2,
            help="also pair up to this many other independent claims with the document",
        )
        parser.add_argument(
            "--hard-negatives",
            choices=["on", "off"],
            # Measured (bench/embedder_gpu.py, dev split): better in every row, most where
            # distractors keep their claims (hybrid recall@10 0.887 against 0.870).
            default="on",
            help="mine one hard negative per pair with the base model (other patents' "
            "documents and claims)",
        )
        parser.add_argument(
            "--negatives",
            type=int,
            default=3,
            help="hard negatives mined per pair (with --hard-negatives on)",
        )
        parser.add_argument("--limit", type=int, help="at most this many pairs (smoke runs)")

    def handle(self, *args, data, out, base, epochs, batch_size, learning_rate, **options):
        if not data.exists():
            raise CommandError(f"{data}: no such file")
        examples = embedder_examples_load(
            (line for _, line in jsonl_lines(data)),
            split="train",
            extra_claims=options["extra_claims"],
        )
        if options["limit"]:
            examples = examples[: options["limit"]]
        if len(examples) < 2:
            raise CommandError("fewer than two (claim, title + abstract) pairs in the train split")
        pairs = [(claim, doc) for _, claim, doc in examples]
        bf16 = options["bf16"] == "on" or (options["bf16"] == "auto" and cpu_has_native_bf16())
        self.stdout.write(f"{len(pairs)} training pairs from {data} (train split)")
        negatives = None
        if options["hard_negatives"] == "on":
            started = time.monotonic()
            encode = base_encoder(base, bf16=bf16, threads=options["threads"])
            negatives = hard_negatives_mine(
                examples, encode=encode, count=max(1, options["negatives"])
            )
            self.stdout.write(
                f"mined {sum(map(len, negatives))} hard negatives in {time.monotonic() - started:.0f} s"
            )
        bar = self.progress(unit=" steps")

        def progress(step, total):
            bar.total = total
            bar.n = step
            bar.refresh()

        report = embedder_train(
            pairs=pairs,
            negatives=negatives,
            out=out,
            base=base,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            max_seq_length=options["max_seq_length"],
            threads=options["threads"],
            bf16=bf16,
            progress=progress,
        )
        bar.close()
        self.stdout.write(
            f"trained in {report['seconds']:.0f} s; saved to {out}. "
            f"Use it with EMBEDDING_MODEL={out.resolve()} (the index rebuilds for a new model)."
        )
