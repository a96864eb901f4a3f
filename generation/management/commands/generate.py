import time

from django.core.management.base import CommandError
from django.db import transaction

from allthepatents.commands import ProgressCommand
from generation.batches import job_run
from generation.models import GenerationJob
from generation.selectors import job_cost
from generation.services import JobParameterError, generator_resolve, job_create


class Command(ProgressCommand):
    help = "Create a generation job (the same service the admin uses); --wait follows it."

    def add_arguments(self, parser):
        parser.add_argument(
            "--model",
            default="kl3m-002-170m-patent",
            help="registry name, hub id, or a local model directory",
        )
        parser.add_argument(
            "--mode", default=GenerationJob.Mode.TOP_DOWN, choices=GenerationJob.Mode.values
        )
        parser.add_argument("--count", type=int, default=20)
        parser.add_argument("--temperature", type=float)
        parser.add_argument("--top-p", type=float)
        parser.add_argument("--top-k", type=int)
        parser.add_argument("--repetition-penalty", type=float)
        parser.add_argument("--max-new-tokens", type=int)
        parser.add_argument("--seed", type=int)
        parser.add_argument(
            "--topic",
            action="append",
            default=[],
            help="a title (top-down) or first claim (bottom-up); repeatable",
        )
        parser.add_argument(
            "--aim-cpc", default="", help="seed the samples from this CPC area's patents"
        )
        parser.add_argument(
            "--aim-query", default="", help="seed the samples from this search's results"
        )
        parser.add_argument("--wait", action="store_true", help="show progress until done")
        parser.add_argument(
            "--inline", action="store_true", help="run in this process instead of on a worker"
        )

    def handle(self, *args, **o):
        from generation.aiming import AimError, aim_at_cpc, aim_at_search

        try:
            aim = None
            if o["aim_cpc"] and o["aim_query"]:
                raise CommandError("--aim-cpc or --aim-query, not both")
            if o["aim_cpc"]:
                aim = aim_at_cpc(cpc=o["aim_cpc"])
            elif o["aim_query"]:
                aim = aim_at_search(query=o["aim_query"])
        except AimError as exc:
            raise CommandError(str(exc)) from exc
        try:
            generator, override = generator_resolve(o["model"])
            with transaction.atomic():
                job = job_create(
                    generator=generator,
                    model_override=override,
                    mode=o["mode"],
                    count=o["count"],
                    temperature=o["temperature"],
                    top_p=o["top_p"],
                    top_k=o["top_k"],
                    repetition_penalty=o["repetition_penalty"],
                    max_new_tokens=o["max_new_tokens"],
                    seed=o["seed"],
                    topics=o["topic"],
                    dispatch=not o["inline"],
                    aim=aim,
                )
        except JobParameterError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"job {job.pk} created: {job.count} x {job.mode} on {generator.name}"
            + (f" ({override})" if override else "")
            + (
                f", aimed at {aim['kind']} {aim['value']!r} ({len(aim['seeds'])} seeds)"
                if aim
                else ""
            )
        )
        bar = self.progress(
            total=job.count,
            unit=" samples",
            disable=not (o["wait"] or o["inline"]),
        )

        def show(j):
            bar.n = j.done_count
            bar.set_postfix(published=j.published_count, rejected=j.rejected_count)
            bar.refresh()

        if o["inline"]:
            job_run(job_id=job.pk, progress=show)
        elif o["wait"]:
            while True:
                job.refresh_from_db()
                show(job)
                if not job.is_active:
                    break
                time.sleep(1)
        bar.close()
        job.refresh_from_db()
        if o["wait"] or o["inline"]:
            self.stdout.write(
                f"job {job.pk} {job.status}: {job.published_count} published, "
                f"{job.rejected_count} rejected {job.rejection_counts or ''}"
            )
            cost = job_cost(job)
            self.stdout.write(
                f"cost: {cost['cpu_seconds']} CPU-s, {cost['tokens']} tokens, "
                f"{cost['tokens_per_second']} tokens/s, {cost['seconds_per_sample']} s/sample, "
                f"{cost['seconds_per_invention']} s/published invention"
            )
            if job.status == GenerationJob.Status.FAILED:
                raise CommandError(job.last_error)
