"""The public stats page: every number on it is generation's (hit rates, rejection reasons,
efficiency, cost), next to the publication counts."""

from django.shortcuts import render
from django.views.decorators.http import require_GET

from generation.selectors import (
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
