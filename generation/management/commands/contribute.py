import json
import time
import urllib.error
import urllib.request

from django.core.management.base import CommandError

from allthepatents.commands import ProgressCommand


class ServerRefused(CommandError):
    def __init__(self, message: str, *, status: int):
        super().__init__(message)
        self.status = status


class Command(ProgressCommand):
    help = (
        "Generate for a site on this machine: lease work units over HTTP, sample them with "
        "the same backend code as the site's workers, submit the token ids (the site proves "
        "them). Ctrl-C gives the unit in hand back; after a crash its lease simply runs out."
    )

    def add_arguments(self, parser):
        parser.add_argument("--server", required=True, help="the site, e.g. https://…")
        parser.add_argument("--token", required=True, help="your contributor API token")
        parser.add_argument("--model", help="a local copy of the unit's model (default: its id)")
        parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
        parser.add_argument("--max-units", type=int, default=0, help="stop after N (0: run on)")
        parser.add_argument("--idle-exit", action="store_true", help="stop when none is left")

    def handle(self, *args, server, token, model, device, max_units, idle_exit, **options):
        from django.conf import settings

        from generation.backends import ModelLoadError, TransformersBackend
        from generation.contributions import contributor_precision
        from generation.sampling import SamplingParams

        settings.GENERATION_DEVICE = device
        api = server.rstrip("/") + "/api/contribute/"

        def call(verb: str, body: dict) -> dict:
            request = urllib.request.Request(  # noqa: S310 (the contributor's own server)
                api + verb,
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            )
            try:
                with urllib.request.urlopen(request, timeout=600) as resp:  # noqa: S310
                    return json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:500]
                raise ServerRefused(
                    f"{verb}: the server answered {exc.code}: {detail}", status=exc.code
                ) from exc
            except urllib.error.URLError as exc:
                raise CommandError(f"{verb}: cannot reach {server}: {exc.reason}") from exc

        backends: dict[tuple, TransformersBackend] = {}
        bar = self.progress(unit=" units", total=max_units or None)
        done = published = 0
        unit = None
        try:
            while not max_units or done < max_units:
                unit = call("lease", {})
                if not unit.get("unit"):
                    unit = None
                    if idle_exit:
                        break
                    time.sleep(30)
                    continue
                source = model or unit["model"]
                precision = contributor_precision(unit.get("precision", "none"), device=device)
                if (source, precision) not in backends:
                    backends.clear()
                    try:
                        backends[source, precision] = TransformersBackend(
                            source, revision=unit["revision"], quantize=precision
                        )
                    except ModelLoadError as exc:
                        call("release", {"unit": unit["unit"]})  # for someone who has it
                        raise CommandError(
                            f"cannot load the unit's model {unit['model']!r}: {exc} "
                            "(pass --model DIR with a copy of it)"
                        ) from exc
                    # A first load may outlast the lease: then the unit is someone else's
                    # now, and the next one is leased with the model in hand.
                    try:
                        call("renew", {"unit": unit["unit"]})
                    except ServerRefused as exc:
                        if exc.status != 409:
                            raise
                        unit = None
                        continue
                params = SamplingParams(**unit["sampling"])
                samples = unit["samples"]
                outs = backends[source, precision].generate(
                    [s["prompt"] for s in samples],
                    [s["seed"] for s in samples],
                    params,
                    heartbeat=self._lease_keeper(call, unit),
                )
                result = call(
                    "submit",
                    {
                        "unit": unit["unit"],
                        "samples": [
                            {"index": s["index"], "token_ids": o.token_ids, "finished": o.finished}
                            for s, o in zip(samples, outs, strict=True)
                        ],
                    },
                )
                unit = None
                result = self._wait(call, result["contribution"])
                if result["status"] == "pending":
                    raise CommandError(
                        f"the site has not checked submission {result['contribution']} yet "
                        "(its workers are busy); it stays queued there and is checked when "
                        "a worker is free: ask /api/contribute/status later"
                    )
                if result["status"] != "accepted":
                    raise CommandError(
                        f"the site refused a unit: {result.get('error') or 'no reason given'}"
                    )
                done += 1
                published += len(result.get("published", []))
                bar.update(1)
                bar.set_postfix(published=published)
        except KeyboardInterrupt:
            if unit and unit.get("unit"):
                call("release", {"unit": unit["unit"]})
                self.stderr.write(f"stopped; unit {unit['unit']} given back")
        finally:
            bar.close()
        self.stdout.write(f"{done} units done, {published} inventions published")

    @staticmethod
    def _lease_keeper(call, unit: dict):
        """Renews the unit's lease while it is generated, a third of the lease at a time,
        so that a slow machine keeps the unit for as long as it takes."""
        every = max(1.0, unit.get("lease_seconds", 120) / 3)
        last = time.monotonic()

        def beat() -> None:
            nonlocal last
            if time.monotonic() - last >= every:
                call("renew", {"unit": unit["unit"]})
                last = time.monotonic()

        return beat

    @staticmethod
    def _wait(call, contribution: int, timeout: float = 1800) -> dict:
        """The site's workers prove a unit before recording it: wait for their answer."""
        deadline = time.monotonic() + timeout
        while True:
            state = call("status", {"contribution": contribution})
            if state["status"] != "pending" or time.monotonic() > deadline:
                return state
            time.sleep(0.5)
