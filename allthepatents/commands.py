"""The base of the project's management commands: one place that owns the progress bar."""

from django.core.management.base import BaseCommand
from tqdm import tqdm


class ProgressCommand(BaseCommand):
    """A command with ``self.progress(...)``: a tqdm bar on the command's stderr (so
    ``call_command(stderr=...)`` captures it), off with ``--no-progress`` where the command
    offers it, or when ``disable`` says so."""

    def progress(self, *, disable: bool = False, **kwargs) -> tqdm:
        # OutputWrapper adds a newline to each write; tqdm redraws with "\r": the raw stream.
        stream = getattr(self.stderr, "_out", self.stderr)
        return tqdm(file=stream, disable=disable, **kwargs)
