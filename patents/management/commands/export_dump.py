from django.conf import settings

from allthepatents.commands import ProgressCommand
from patents.dumps import dump_export


class Command(ProgressCommand):
    help = "Write a dated, gzipped JSON Lines dump of all published inventions with a manifest."

    def add_arguments(self, parser):
        parser.add_argument("--out", default=None, help="folder (default EXPORT_DIR)")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, out, no_progress, **options):
        from pathlib import Path

        from patents.selectors import patent_counts

        bar = self.progress(
            total=patent_counts()["generated"], unit=" inventions", disable=no_progress
        )
        manifest = dump_export(
            out_dir=Path(out) if out else settings.EXPORT_DIR, progress=bar.update
        )
        bar.close()
        self.stdout.write(
            f"wrote {manifest['file']}: {manifest['count']} inventions, "
            f"sha256 {manifest['sha256']}, chain head {manifest['chain_head']}"
        )
