from django import template

from patents import presentation

register = template.Library()


@register.filter
def display_title(patent) -> str:
    return presentation.display_title(patent)


@register.filter
def reference_number(patent) -> str:
    return presentation.reference_number(patent)


@register.filter
def official_url(patent) -> str:
    return presentation.official_url(patent)


@register.filter
def cpc_list(patent) -> list[str]:
    """A patent's CPC codes as stored (normalised): what the CPC filter matches."""
    return (getattr(patent, "cpc_codes", "") or "").split()
