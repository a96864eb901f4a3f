"""Template context for every page: whether the visitor is a reviewer (a member of the
Reviewers group), and the verdicts a reviewer can give. Evaluated only where a template
asks, and never an error: a page must render even when the database does not answer."""

from django.utils.functional import SimpleLazyObject

from generation.models import ExaminerVerdict


def reviewer(request):
    def is_reviewer() -> bool:
        from generation.verdicts import user_is_reviewer

        try:
            return user_is_reviewer(getattr(request, "user", None))
        except Exception:
            return False

    return {
        "is_reviewer": SimpleLazyObject(is_reviewer),
        "verdict_kinds": ExaminerVerdict.Kind.choices,
    }
