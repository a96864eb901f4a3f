import json

from allthepatents.commands import ProgressCommand
from search.models import IndexedVector
from search.selectors import index_health
from search.services import search_documents_sync, search_index_rebuild, search_index_update


class Command(ProgressCommand):
    help = "Search index: status | update (incremental) | rebuild (from the database)."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["status", "update", "rebuild"])
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, action, no_progress, **options):
        if action == "status":
            self.stdout.write(json.dumps(index_health(), indent=2))
            return
        search_documents_sync()
        bar = self.progress(
            total=IndexedVector.objects.count() if action == "rebuild" else None,
            unit=" vectors",
            disable=no_progress,
        )
        run = search_index_rebuild if action == "rebuild" else search_index_update
        result = run(progress=bar.update)
        bar.close()
        self.stdout.write(
            f"{action}: added {result['added']} vectors; index holds {result['count']}"
            + (" (rebuilt)" if result["rebuilt"] else "")
        )
