import hmac

from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from allthepatents.health import health_liveness, health_report


def _may_see_detail(request) -> bool:
    if getattr(request, "user", None) is not None and request.user.is_staff:
        return True
    token = settings.HEALTHZ_TOKEN
    if not token:
        return False
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())


@never_cache
@require_GET
def healthz(request):
    """Public liveness (database only, no detail): cheap enough for any load balancer.
    ``?detail=1`` adds broker, worker and index, for staff or ``Authorization: Bearer
    HEALTHZ_TOKEN``; those probes are cached for HEALTHZ_CACHE_SECONDS."""
    if request.GET.get("detail"):
        if not _may_see_detail(request):
            return JsonResponse(
                {
                    "error": "the detailed report needs a staff login or the health token",
                    "status": 403,
                },
                status=403,
            )
        report, ok = health_report()
    else:
        report, ok = health_liveness()
    return JsonResponse(report, status=200 if ok else 503)


def server_error(request):
    """The site's own 500 page; a request stopped by its deadline outside the view (in a
    middleware) still gets the "took too long" answer."""
    import sys

    from django.shortcuts import render

    from allthepatents.deadline import RequestDeadlineExceeded, deadline_response

    if isinstance(sys.exc_info()[1], RequestDeadlineExceeded):
        return deadline_response(request)
    return render(request, "500.html", status=500)
