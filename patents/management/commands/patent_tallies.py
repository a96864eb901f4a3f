from django.core.management.base import BaseCommand, CommandError

from patents.selectors import patent_tallies_problems
from patents.services import patent_tallies_rebuild


class Command(BaseCommand):
    help = (
        "patent_tallies check: compare the published patents' tallies (the public counts) "
        "with a count of the patents, naming every difference. "
        "patent_tallies rebuild: count them again (after rows were loaded around the "
        "services, or where check found a difference)."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["check", "rebuild"], nargs="?", default="check")

    def handle(self, *args, action, **options):
        if action == "rebuild":
            n = patent_tallies_rebuild()
            self.stdout.write(self.style.SUCCESS(f"patent tallies counted again: {n} tallies"))
            return
        problems = patent_tallies_problems()
        if problems:
            raise CommandError(
                "the tallies differ from the patents (mend: manage.py patent_tallies rebuild):\n"
                + "\n".join(problems)
            )
        self.stdout.write(self.style.SUCCESS("patent tallies agree with the patents"))
