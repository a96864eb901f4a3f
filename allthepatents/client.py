"""Who is asking: the client address, the same for the rate limit and the login lockout."""

from django.conf import settings


def client_address(request) -> str:
    """REMOTE_ADDR, or behind ``TRUSTED_PROXY_COUNT`` reverse proxies the address the
    outermost trusted proxy saw: the n-th X-Forwarded-For entry from the right (entries
    further left are whatever the client chose to send)."""
    remote = request.META.get("REMOTE_ADDR", "") or "unknown"
    trusted = settings.TRUSTED_PROXY_COUNT
    if not trusted:
        return remote
    forwarded = [
        part.strip()
        for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
        if part.strip()
    ]
    if not forwarded:
        return remote
    return forwarded[-trusted] if len(forwarded) >= trusted else forwarded[0]


def client_ip_or_none(request) -> str | None:
    """``client_address`` when it is an IP address, else None: what django-axes stores
    (PostgreSQL's inet column refuses anything else, such as a forged X-Forwarded-For)."""
    import ipaddress

    try:
        return str(ipaddress.ip_address(client_address(request)))
    except ValueError:
        return None
