import json
from pathlib import Path

from django.core.management.base import CommandError

from allthepatents.commands import ProgressCommand
from patents.ledger import (
    HeadsFileError,
    ledger_days_rebuild,
    ledger_heads_parse,
    ledger_timestamp_heads,
    ledger_verify,
)
from patents.models import LedgerEntry


class Command(ProgressCommand):
    help = (
        "ledger verify [--heads FILE]: the chain, every entry against its invention and every "
        "invention against its entries, saved heads, timestamp tokens. "
        "ledger timestamp: send due daily heads to LEDGER_TSA_URL. "
        "ledger days: count each day's entries again for the daily heads (after a bulk load, "
        "or where verify found the kept counts wrong)."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["verify", "timestamp", "days"])
        parser.add_argument(
            "--heads",
            type=Path,
            action="append",
            default=[],
            help="a saved /ledger/heads.json or dump manifest (repeatable)",
        )
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, action, heads, no_progress, **options):
        if action == "days":
            days = ledger_days_rebuild()
            self.stdout.write(self.style.SUCCESS(f"ledger days counted again: {days} days"))
            return
        if action == "timestamp":
            result = ledger_timestamp_heads()
            self.stdout.write(json.dumps(result))
            if result.get("failed"):
                raise CommandError("the time-stamping authority did not answer; try again later")
            return
        saved: dict[int, str] = {}
        for path in heads:
            try:
                saved.update(ledger_heads_parse(json.loads(path.read_text())))
            except (OSError, ValueError, HeadsFileError) as exc:
                raise CommandError(f"{path}: {exc}") from None
        bar = self.progress(
            total=LedgerEntry.objects.count(),
            unit=" entries",
            disable=no_progress,
        )
        checked, problem = ledger_verify(heads=saved, progress=bar.update)
        bar.close()
        if problem:
            raise CommandError(
                f"ledger does not verify: {problem}. {checked} entries before it are intact."
            )
        extra = f"; {len(saved)} saved heads found in place" if saved else ""
        self.stdout.write(self.style.SUCCESS(f"ledger OK: {checked} entries verified{extra}"))
