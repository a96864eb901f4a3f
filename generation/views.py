"""The public stats page: every number on it is generation's (hit rates, rejection reasons,
efficiency, cost), next to the publication counts. And the contributors' work-unit API
(#18): JSON over HTTPS, a Bearer token per contributor, no cookies (so no CSRF)."""

import json

from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from generation.contributions import (
    ContributionError,
    contribution_receive,
    contribution_status,
    contributor_authenticate,
    work_unit_lease,
    work_unit_release,
)
from generation.selectors import (
    contributors_credits,
    stats_cost_by_model,
    stats_daily_efficiency,
    stats_hit_rates,
    stats_rejection_reasons,
)
from patents.selectors import patent_counts


@require_GET
def stats(request):
    hit_rates = stats_hit_rates()
    reasons = stats_rejection_reasons()
    daily = stats_daily_efficiency()
    max_reason = max((n for _, n in reasons), default=1)
    max_tps = max((d["tokens_per_second"] for d in daily), default=0) or 1
    return render(
        request,
        "generation/stats.html",
        {
            "counts": patent_counts(),
            "hit_rates": [{**r, "width": round(r["rate"] * 100, 1)} for r in hit_rates],
            "reasons": [
                {"reason": r, "count": n, "width": round(100 * n / max_reason, 1)}
                for r, n in reasons
            ],
            "daily": [
                {**d, "width": round(100 * d["tokens_per_second"] / max_tps, 1)} for d in daily
            ],
            "costs": stats_cost_by_model(),
        },
    )


@require_GET
def contributors(request):
    return render(request, "generation/contributors.html", {"contributors": contributors_credits()})


def _contribution_api(handler):
    """Bearer-token authentication, a JSON body, and refusals as JSON with their status."""

    @csrf_exempt
    @require_POST
    def view(request):
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.startswith("Bearer ") else ""
        contributor = contributor_authenticate(token=token)
        if contributor is None:
            return JsonResponse({"error": "unknown or revoked token", "status": 401}, status=401)
        try:
            body = json.loads(request.body or b"{}")
            if not isinstance(body, dict):
                raise ValueError("a JSON object")
        except ValueError:
            return JsonResponse({"error": "send a JSON object", "status": 400}, status=400)
        try:
            return handler(contributor, body)
        except ContributionError as exc:
            return JsonResponse({"error": str(exc), "status": exc.status}, status=exc.status)

    return view


@_contribution_api
def api_contribute_lease(contributor, body):
    unit = work_unit_lease(contributor=contributor)
    if unit is None:
        return JsonResponse({"unit": None, "retry_after": 60})
    return JsonResponse(unit)


@_contribution_api
def api_contribute_submit(contributor, body):
    received = contribution_receive(
        contributor=contributor, unit_id=str(body.get("unit", "")), samples=body.get("samples")
    )
    # A worker proves and records it; ask /api/contribute/status with this id.
    return JsonResponse({"contribution": received.pk, "status": received.status}, status=202)


@_contribution_api
def api_contribute_status(contributor, body):
    try:
        contribution_id = int(body.get("contribution"))
    except (TypeError, ValueError):
        raise ContributionError("contribution must be the id submit returned", status=400) from None
    return JsonResponse(
        contribution_status(contributor=contributor, contribution_id=contribution_id)
    )


@_contribution_api
def api_contribute_release(contributor, body):
    return JsonResponse(
        {"released": work_unit_release(contributor=contributor, unit_id=str(body.get("unit")))}
    )
