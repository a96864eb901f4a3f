from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from patents.models import LedgerEntry
from patents.services import ledger_verify


class Command(BaseCommand):
    help = "ledger verify: recompute every content hash and the hash chain."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["verify"])
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, action, no_progress, **options):
        bar = tqdm(
            total=LedgerEntry.objects.count(),
            unit=" entries",
            disable=no_progress,
            file=self.stderr._out,
        )
        checked, problem = ledger_verify(progress=bar.update)
        bar.close()
        if problem:
            raise CommandError(
                f"ledger entry {problem.entry_id} ({problem.public_id}) does not verify: "
                f"{problem.why}. {checked} entries before it are intact."
            )
        self.stdout.write(self.style.SUCCESS(f"ledger OK: {checked} entries verified"))
