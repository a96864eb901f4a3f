"""``{% my_verdict patent as mine %}``: the signed-in reviewer's verdict on an invention,
for the verdict form on an invention's page and on result lines."""

from django import template

from generation.verdicts import verdict_of

register = template.Library()


@register.simple_tag(takes_context=True)
def my_verdict(context, patent):
    request = context.get("request")
    if request is None or not context.get("is_reviewer"):
        return None
    return verdict_of(patent=patent, reviewer=request.user)
