"""The public stats page: every number on it is generation's (hit rates, rejection reasons,
efficiency, cost), next to the publication counts. And the contributors' work-unit API
(#18): JSON over HTTPS, a Bearer token per contributor, no cookies (so no CSRF)."""

import csv
import itertools

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import (
    Http404,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from allthepatents.api import (
    ApiBodyError,
    ApiParamError,
    api_error,
    api_methods,
    api_next_url,
    api_page_params,
    json_body_parse,
    json_safe_response,
)
from allthepatents.kept import kept
from allthepatents.ratelimit import rate_limit_check
from generation.contributions import (
    ContributionError,
    contribution_receive,
    contribution_status,
    contributor_authenticate,
    contributor_sign_up,
    work_unit_lease,
    work_unit_release,
    work_unit_renew,
)
from generation.selectors import (
    contributors_credits,
    coverage_areas,
    stats_backtests,
    stats_cost_by_model,
    stats_daily_efficiency,
    stats_hit_rates,
    stats_rejection_reasons,
)
from generation.verdicts import (
    VerdictError,
    stats_verdicts,
    user_is_reviewer,
    verdict_set,
    verdicts_export,
    verdicts_export_page,
    verdicts_of_reviewer,
)
from patents.selectors import patent_counts, patent_get
from search.exports import csv_cell

# What each kind of refused contribution is over HTTP.
CONTRIBUTION_STATUS = {
    "invalid": 400,
    "not_found": 404,
    "conflict": 409,
    "too_many": 429,
    "unavailable": 503,
}


@require_GET
def stats(request):
    hit_rates = stats_hit_rates()
    reasons = stats_rejection_reasons()
    daily = stats_daily_efficiency()
    max_reason = max((n for _, n in reasons), default=1)
    max_tps = max((d["tokens_per_second"] for d in daily), default=0) or 1
    costs = stats_cost_by_model()
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
            "costs": costs,
            "verdicts": stats_verdicts(cost_by_model=costs),
            "backtests": stats_backtests(),
        },
    )


@require_GET
@staff_member_required
def coverage(request):
    """For admins: the CPC areas examiners search most, beside the inventions aimed there."""
    days = settings.SEARCH_TALLY_DAYS
    return render(
        request, "generation/coverage.html", {"areas": coverage_areas(days=days), "days": days}
    )


@require_GET
def contributors(request):
    return render(
        request,
        "generation/contributors.html",
        {"contributors": kept(contributors_credits), "signup": settings.CONTRIBUTOR_SIGNUP},
    )


@require_http_methods(["GET", "POST"])
def contributor_signup(request):
    """Public sign-up (off unless CONTRIBUTOR_SIGNUP): a name in, a token out, shown once."""
    if not settings.CONTRIBUTOR_SIGNUP:
        raise Http404("Public sign-up is off.")
    context = {"name": "", "error": "", "token": ""}
    status = 200
    if request.method == "POST":
        context["name"] = request.POST.get("name", "")[:200]
        wait = rate_limit_check(
            request,
            scope="signup",
            limit=settings.CONTRIBUTOR_SIGNUP_PER_HOUR,
            window=3600,
        )
        if wait:
            context["error"] = f"Too many sign-ups from your address; try again in {wait} s."
            status = 429
        else:
            try:
                contributor, token = contributor_sign_up(name=context["name"])
            except ContributionError as exc:
                message = str(exc)
                context["error"], status = (
                    message[:1].upper() + message[1:] + ".",
                    CONTRIBUTION_STATUS[exc.kind],
                )
            else:
                context.update(token=token, contributor=contributor)
    response = render(request, "generation/contributor_signup.html", context, status=status)
    if context["token"]:
        response["Cache-Control"] = "no-store"  # the token is shown once, kept nowhere
    return response


def _contribution_api(handler):
    """Bearer-token authentication, a JSON body, and refusals as JSON with their status."""

    @csrf_exempt
    @api_methods("POST")
    def view(request):
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.startswith("Bearer ") else ""
        contributor = contributor_authenticate(token=token)
        if contributor is None:
            return api_error("unknown, revoked or suspended token", 401)
        try:
            body = json_body_parse(request.body)
        except ApiBodyError as exc:
            return api_error(f"send a JSON object: {exc}", 400)
        try:
            return handler(request, contributor, body)
        except ContributionError as exc:
            return api_error(str(exc), CONTRIBUTION_STATUS[exc.kind])

    return view


def _unit_id(body: dict) -> str:
    """The ``unit`` that lease returned: a missing or non-string one is a malformed request
    (400, as the API document says), not a unit that is "not yours any more"."""
    unit_id = body.get("unit")
    if not isinstance(unit_id, str) or not unit_id:
        raise ContributionError("unit must be the id lease returned", kind="invalid")
    return unit_id


@_contribution_api
def api_contribute_lease(request, contributor, body):
    unit = work_unit_lease(contributor=contributor)
    if unit is None:
        return JsonResponse({"unit": None, "retry_after": 60})
    return JsonResponse(unit)


@_contribution_api
def api_contribute_submit(request, contributor, body):
    # Per token, not per address: every submission costs a worker a forward pass.
    wait = rate_limit_check(
        request,
        scope="contribute-submit",
        limit=settings.CONTRIBUTOR_SUBMITS_PER_MINUTE,
        window=60,
        client=f"contributor-{contributor.token_hash[:16]}",
    )
    if wait:
        raise ContributionError(f"too many submissions; try again in {wait} s", kind="too_many")
    received = contribution_receive(
        contributor=contributor, unit_id=_unit_id(body), samples=body.get("samples")
    )
    # A worker proves and records it; ask /api/contribute/status with this id.
    return JsonResponse({"contribution": received.pk, "status": received.status}, status=202)


@_contribution_api
def api_contribute_status(request, contributor, body):
    contribution_id = body.get("contribution")
    if type(contribution_id) is not int:
        raise ContributionError("contribution must be the id submit returned", kind="invalid")
    return JsonResponse(
        contribution_status(contributor=contributor, contribution_id=contribution_id)
    )


@_contribution_api
def api_contribute_renew(request, contributor, body):
    """Keeps a unit while the contributor's machine is still generating it."""
    unit_id = _unit_id(body)
    expires = work_unit_renew(contributor=contributor, unit_id=unit_id)
    return JsonResponse({"unit": unit_id, "expires_at": expires})


@_contribution_api
def api_contribute_release(request, contributor, body):
    return JsonResponse(
        {"released": work_unit_release(contributor=contributor, unit_id=_unit_id(body))}
    )


# --- examiners' verdicts ---------------------------------------------------------------


@require_http_methods(["POST"])
def verdict_submit(request, public_id):
    """A reviewer's verdict on an invention, from its page or a result line; back to
    where it came from."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if not user_is_reviewer(request.user):
        raise PermissionDenied("only members of the Reviewers group can give verdicts")
    patent = patent_get(public_id=public_id, with_claims=False)
    if patent is None:
        raise Http404("no invention with that id")
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        back = patent.get_absolute_url()
    try:
        verdict_set(
            patent=patent,
            reviewer=request.user,
            verdict=request.POST.get("verdict", ""),
            note=request.POST.get("note", ""),
        )
    except VerdictError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Your verdict on {patent.public_id} is recorded.")
    return HttpResponseRedirect(back)


@require_GET
def reviewer_verdicts(request):
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if not user_is_reviewer(request.user):
        raise PermissionDenied("only members of the Reviewers group give verdicts")
    return render(
        request,
        "generation/verdicts.html",
        {"verdicts": verdicts_of_reviewer(reviewer=request.user)},
    )


# A page of /api/verdicts: a few hundred KB of JSON at most.
VERDICTS_PAGE_MAX = 1000
VERDICT_FIELDS = ("public_id", "generator_model", "mode", "verdict", "note", "updated_at")


class _Echo:
    def write(self, value):
        return value


@require_GET
def verdicts_csv(request):
    """Every verdict as CSV (who gave it is not published), streamed as it is read."""
    writer = csv.writer(_Echo())
    lines = itertools.chain(
        [writer.writerow(VERDICT_FIELDS)],
        (writer.writerow([csv_cell(row[f]) for f in VERDICT_FIELDS]) for row in verdicts_export()),
    )
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="verdicts.csv"'
    return response


@csrf_exempt
@api_methods("GET")
def api_verdicts(request):
    """The verdicts a page at a time, in the order given: ``after`` (the ``next`` of the
    page before) and ``limit`` (at most VERDICTS_PAGE_MAX)."""
    try:
        after, limit = api_page_params(request, maximum=VERDICTS_PAGE_MAX)
    except ApiParamError as exc:
        return api_error(str(exc), 400)
    rows, following = verdicts_export_page(after=after, limit=limit)
    # A reviewer's note is text like any other: never readable as HTML.
    return json_safe_response(
        {"verdicts": rows, "next": api_next_url("api_verdicts", after=following, limit=limit)}
    )
