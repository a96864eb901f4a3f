import time
from pathlib import Path

from django.core.management.base import CommandError

from allthepatents.commands import ProgressCommand
from patents.importing import reference_import_records, uspto_import_paths
from patents.records import jsonl_lines
from patents.uspto import is_uspto_path


class Command(ProgressCommand):
    help = (
        "Import real patents as reference patents: JSON Lines (plain or .gz) or USPTO full "
        "text (grant/application XML, weekly .zip archives). Idempotent by publication id."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", type=Path)
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument("--no-progress", action="store_true")
        parser.add_argument(
            "--max-bad-listed", type=int, default=50, help="bad lines listed in the summary"
        )

    def handle(self, *args, paths, batch_size, no_progress, max_bad_listed, **options):
        for path in paths:
            if not path.exists():
                raise CommandError(f"{path}: no such file")
        total_bad = 0
        broken = []
        for path in paths:
            started = time.monotonic()
            uspto = is_uspto_path(path)
            bar = self.progress(
                desc=path.name,
                unit=" documents" if uspto else " lines",
                disable=no_progress,
            )
            if uspto:
                report = uspto_import_paths([path], batch_size=batch_size, progress=bar.update)
            else:
                report = reference_import_records(
                    jsonl_lines(path), batch_size=batch_size, progress=bar.update
                )
            bar.close()
            took = time.monotonic() - started
            self.stdout.write(f"{path}: {report.summary()} in {took:.1f}s")
            for where, why in report.bad[:max_bad_listed]:
                label = f"line {where}" if isinstance(where, int) else where
                self.stdout.write(f"  {label}: {why}")
            if len(report.bad) > max_bad_listed:
                self.stdout.write(f"  ... and {len(report.bad) - max_bad_listed} more bad lines")
            total_bad += len(report.bad)
            if report.broken:
                broken.append(f"{path}: {report.broken}")
        if total_bad:
            self.stdout.write(self.style.WARNING(f"{total_bad} bad lines were skipped"))
        if broken:
            # After the summary: the rows before the break are committed and stay.
            raise CommandError(
                "input ended early (rows before the break were imported): " + "; ".join(broken)
            )
