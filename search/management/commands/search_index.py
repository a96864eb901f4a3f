import json
import time

from django.core.management.base import CommandError

from allthepatents.commands import ProgressCommand
from search.embeddings import bulk_processes
from search.selectors import index_health, vectors_pending_query
from search.services import (
    search_documents_sync,
    search_index_dates_write,
    search_index_rebuild,
    search_index_retype,
    search_index_update,
)
from search.store import IndexUnavailable


class Command(ProgressCommand):
    help = (
        "Search index: status | update (incremental) | rebuild (from the database) | shards "
        "(a bulk build spread over the indexing workers of any number of machines) | dates "
        "(write the table of vector dates whole: date filters run inside the search) | retype "
        "(an IVF index of 8-bit codes rebuilt with fast-scan codes from its stored vectors, "
        "no embedding) | keyword (SEARCH_KEYWORD_ENGINE=tantivy: bring the keyword engine in "
        "step with the database, --rebuild: from nothing; database: --rebuild writes its full "
        "text again)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "action",
            choices=["status", "update", "rebuild", "shards", "dates", "retype", "keyword"],
        )
        parser.add_argument(
            "--size",
            type=int,
            help="shards: vectors per shard (default SEARCH_SHARD_SIZE)",
        )
        parser.add_argument(
            "--merge",
            action="store_true",
            help="shards: add the finished shards to the index now (the last worker to "
            "finish queues this by itself)",
        )
        parser.add_argument(
            "--rebuild",
            action="store_true",
            help="keyword: build the keyword engine's index again from the database",
        )
        parser.add_argument("--no-progress", action="store_true")
        parser.add_argument(
            "--wait",
            type=float,
            default=6 * 3600,
            help="seconds to wait for another process writing the index (default 6 h)",
        )
        parser.add_argument(
            "--documents-only",
            action="store_true",
            help="add the title + abstract vectors only, claims later (the next update, or the "
            "worker that `make run` starts): searchable in a fifth of the time",
        )
        parser.add_argument(
            "--processes",
            type=int,
            help="embedding processes of one thread each (default SEARCH_INDEX_PROCESSES: "
            "one per core)",
        )

    def handle(self, *args, action, no_progress, wait, processes, documents_only, **options):
        if action == "status":
            self.stdout.write(json.dumps(index_health(), indent=2))
            return
        if action == "dates":
            started = time.monotonic()
            meta = search_index_dates_write(lock_timeout=wait)
            self.stdout.write(
                f"vector dates: {meta['through']} vectors covered in "
                f"{time.monotonic() - started:.1f} s"
            )
            return
        if action == "retype":
            try:
                result = search_index_retype(lock_timeout=wait)
            except IndexUnavailable as exc:
                raise CommandError(f"not retyped: {exc}") from exc
            if result["retyped"]:
                self.stdout.write(
                    f"retyped: {result['count']:,} vectors now in {result['codes']} lists, "
                    f"in {result['seconds']} s"
                )
            else:
                self.stdout.write(f"nothing to retype: the index is {result['codes']}")
            return
        if action == "keyword":
            self._keyword(rebuild=options["rebuild"], wait=wait, no_progress=no_progress)
            return
        if action == "shards":
            self._shards(size=options["size"], merge=options["merge"], wait=wait)
            return
        search_documents_sync()
        bar = self.progress(
            total=self._expected(action, documents_only=documents_only),
            unit=" vectors",
            disable=no_progress,
        )
        if processes is not None and processes < 1:
            raise CommandError("--processes must be at least 1")
        chosen = processes or bulk_processes()
        rebuild_or_update = search_index_rebuild if action == "rebuild" else search_index_update

        def run(**kwargs):
            return rebuild_or_update(processes=chosen, documents_only=documents_only, **kwargs)

        result = self._run_when_free(run, bar, wait=wait)
        bar.close()
        if result.get("shards_left"):
            raise CommandError(
                f"a sharded build is under way ({result['shards_left']} shards not merged "
                "yet): the vectors past it are added when it is merged; `search_index "
                "status` shows its progress, and `search_index rebuild` replaces it"
            )
        self.stdout.write(
            f"{action}: added {result['added']} vectors; index holds {result['count']}"
            + (" (rebuilt)" if result["rebuilt"] else "")
            + ("; claims follow on the next update" if documents_only else "")
        )

    def _keyword(self, *, rebuild: bool, wait: float, no_progress: bool) -> None:
        from filelock import Timeout

        from search.fulltext import fulltext_enabled, keyword_index_sync, keyword_patents_pending

        search_documents_sync()
        if not fulltext_enabled():
            if not rebuild:
                raise CommandError(
                    "SEARCH_KEYWORD_ENGINE is 'database': its full text is written as patents "
                    "are published; --rebuild writes it all again (after a time on tantivy)"
                )
            from search.models import KeywordDocument
            from search.services import keyword_documents_refeed

            bar = self.progress(
                total=KeywordDocument.objects.count(), unit=" patents", disable=no_progress
            )
            fed = keyword_documents_refeed(progress=bar.update)
            bar.close()
            self.stdout.write(f"keyword: the database's full text written for {fed} patents")
            return
        bar = self.progress(
            total=keyword_patents_pending(rebuild=rebuild),
            unit=" patents",
            disable=no_progress,
        )
        try:
            result = keyword_index_sync(rebuild=rebuild, lock_timeout=wait, progress=bar.update)
        except Timeout:
            raise CommandError(
                f"another process has been writing the keyword index for longer than --wait "
                f"({wait:.0f} s)"
            ) from None
        bar.close()
        self.stdout.write(
            f"keyword: added {result['added']} patents, removed {result['removed']}; the "
            f"engine holds {result['count']} ({result['seconds']} s)"
        )

    def _shards(self, *, size: int | None, merge: bool, wait: float) -> None:
        from search.shards import ShardError, embedding_shards_merge, embedding_shards_plan

        if size is not None and size < 1:
            raise CommandError("--size must be at least 1")
        try:
            if merge:
                result = embedding_shards_merge(lock_timeout=wait)
                self.stdout.write(
                    f"merged {result['merged']} shards ({result['added']} vectors); "
                    f"{result['left']} shards left"
                )
                return
            search_documents_sync()
            queued = embedding_shards_plan(size=size)
        except ShardError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"queued {len(queued)} shards on the indexing queue: every worker that consumes "
            "it takes one (`search_index status` shows the progress; the last one to finish "
            "merges them into the index)"
        )

    @staticmethod
    def _expected(action: str, *, documents_only: bool = False) -> int:
        """Vectors this run should embed, for the bar's time left: all of them for a
        rebuild or an unusable index, else those past the manifest's last one (rows that
        arrive meanwhile raise the count as they come)."""
        from django.conf import settings

        from search.store import manifest_safe

        manifest = manifest_safe() if action == "update" else None
        if manifest and manifest.get("embedding_model") != settings.EMBEDDING_MODEL:
            manifest = None  # a new embedding model rebuilds everything
        return vectors_pending_query(
            last_vector_id=int((manifest or {}).get("last_vector_id", 0)),
            documents_through=int((manifest or {}).get("documents_through") or 0),
            documents_only=documents_only,
        ).count()

    def _run_when_free(self, run, bar, *, wait: float):
        """One writer at a time: when another process holds the index (a worker that
        `make run` started is indexing the same rows), say so and wait for it, then do
        what is left (often nothing)."""
        from filelock import Timeout

        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                left = max(0.0, deadline - time.monotonic())
                return run(progress=bar.update, lock_timeout=0 if not told else min(30, left))
            except Timeout:
                if time.monotonic() >= deadline:
                    raise CommandError(
                        "another process has been writing the search index for longer than "
                        f"--wait ({wait:.0f} s); see `search_index status`, or stop the other "
                        "writer (a worker's indexing task) and run this again"
                    ) from None
                if not told:
                    self.stderr.write(
                        "another process is writing the search index (a worker indexing "
                        "the same rows, or another search_index command): waiting for it "
                        "to finish, then adding whatever is left"
                    )
                    told = True
