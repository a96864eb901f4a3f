from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import path
from django.utils.html import format_html, format_html_join

from allthepatents.admin import ReadOnlyAdmin
from generation.aiming import AimError, aim_at_cpc, aim_at_search
from generation.contributions import contributor_create, contributor_revoke
from generation.models import Contributor, ExaminerVerdict, GenerationJob, Generator, Sample
from generation.sampling import JOB_SAMPLING_FIELDS, SAMPLING_DEFAULTS
from generation.selectors import job_cost, job_workers
from generation.services import (
    JobParameterError,
    generator_sampling_defaults,
    job_cancel,
    job_create,
    job_dispatch,
    job_params_validate,
    job_rerun,
    job_sampling_resolve,
)
from patents.admin import ModeFilter

SAMPLING_DEFAULTS_TEXT = {
    name: str(getattr(SAMPLING_DEFAULTS, name)) for name in JOB_SAMPLING_FIELDS
}

RUN_PERM = "generation.run_generation"


@admin.register(Generator)
class GeneratorAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "model_id",
        "local_path",
        "backend",
        "prompt_format",
        "is_default",
        "enabled",
    ]
    list_editable = ["enabled"]


class JobCreateForm(forms.ModelForm):
    topics_text = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        label="Topic seeds",
        help_text="One per line: a title (top-down) or a first claim (bottom-up).",
    )
    aim_cpc = forms.CharField(
        required=False,
        label="Aim at a CPC area",
        help_text="e.g. A61K or H04L 9: the area's reference patents seed the samples "
        "(titles top-down, claim preambles bottom-up). Replaces the topic seeds.",
    )
    aim_query = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        label="Aim at a search",
        help_text="The reference patents this search finds first seed the samples.",
    )

    class Meta:
        model = GenerationJob
        fields = [
            "generator",
            "model_override",
            "mode",
            "count",
            "temperature",
            "top_p",
            "top_k",
            "repetition_penalty",
            "max_new_tokens",
            "seed",
            "open_to_contributors",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Empty means the generator's default (its card's sampling settings) and, for the
        # seed, a random one: filled-in model defaults would override both unasked.
        generators = Generator.objects.filter(enabled=True)
        for name in (*JOB_SAMPLING_FIELDS, "seed"):
            field = self.fields[name]
            field.required = False
            field.initial = None
            self.initial.pop(name, None)
        for name in JOB_SAMPLING_FIELDS:
            self.fields[name].widget.attrs["placeholder"] = "generator's default"
            defaults = [
                f"{g.name}: {generator_sampling_defaults(g)[name]}"
                for g in generators
                if name in (g.default_params or {})
            ]
            self.fields[name].help_text = (
                f"Empty: the generator's default ({SAMPLING_DEFAULTS_TEXT[name]}"
                + (f"; {', '.join(defaults)}" if defaults else "")
                + ")."
            )
        self.fields["seed"].widget.attrs["placeholder"] = "random"
        self.fields["seed"].help_text = "Empty: a random seed, shown on the job's page."

    def clean(self):
        data = super().clean()
        generator = data.get("generator")
        if generator is None:
            return data
        params = job_sampling_resolve(
            generator=generator, **{name: data.get(name) for name in JOB_SAMPLING_FIELDS}
        )
        try:
            job_params_validate(count=data.get("count") or 0, mode=data.get("mode") or "", **params)
        except JobParameterError as exc:
            raise forms.ValidationError(str(exc)) from exc
        cpc, query = (data.get("aim_cpc") or "").strip(), (data.get("aim_query") or "").strip()
        if cpc and query:
            raise forms.ValidationError("aim at a CPC area or at a search, not both")
        try:
            if cpc:
                data["aim"] = aim_at_cpc(cpc=cpc)
            elif query:
                data["aim"] = aim_at_search(query=query)
        except AimError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return data


class SampleInline(admin.TabularInline):
    model = Sample
    extra = 0
    can_delete = False
    fields = ["index", "mode", "verdict", "reasons", "tokens", "patent"]
    readonly_fields = fields
    max_num = 0
    show_change_link = True


@admin.register(GenerationJob)
class GenerationJobAdmin(admin.ModelAdmin):
    class Media:
        css = {"all": ["generation/admin.css"]}

    # Few, narrow columns: at 1280 px the filter panel must not cover the last ones.
    list_display = ["id", "generator", "mode_short", "status", "progress", "created"]
    list_filter = ["status", "mode", "generator"]
    actions = ["start_jobs", "cancel_jobs", "rerun_jobs"]

    def get_inlines(self, request, obj):
        return [SampleInline] if obj else []

    change_form_template = "admin/generation/generationjob/change_form.html"

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = JobCreateForm
        return super().get_form(request, obj, **kwargs)

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        default = Generator.objects.filter(is_default=True, enabled=True).first()
        if default and "generator" not in initial:
            initial["generator"] = default.pk
        return initial

    def get_fields(self, request, obj=None):
        if obj is None:
            return [*JobCreateForm.Meta.fields, "topics_text", "aim_cpc", "aim_query"]
        return super().get_fields(request, obj)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return [
            "progress",
            "cost",
            "workers",
            "aimed_at",
            *[f.name for f in self.model._meta.fields if f.name != "aim"],
        ]

    @admin.display(description="aimed at")
    def aimed_at(self, obj):
        aim = obj.aim or {}
        if not aim.get("seeds"):
            return "—"
        what = "CPC area" if aim.get("kind") == "cpc" else "search"
        return format_html(
            "{} <strong>{}</strong>, seeded from {} reference patents: {}",
            what,
            aim.get("value", ""),
            len(aim["seeds"]),
            ", ".join(s.get("source_id") or s.get("public_id", "") for s in aim["seeds"][:10]),
        )

    @admin.display(description="cost")
    def cost(self, obj):
        c = job_cost(obj)
        return format_html(
            "{} CPU-s · {} tokens · {} tokens/s · {} s per sample · {} s per published invention"
            " · {} samples stopped early, {} tokens of their budget unspent",
            c["cpu_seconds"],
            c["tokens"],
            c["tokens_per_second"] if c["tokens_per_second"] is not None else "—",
            c["seconds_per_sample"] if c["seconds_per_sample"] is not None else "—",
            c["seconds_per_invention"] if c["seconds_per_invention"] is not None else "—",
            c["early_stopped"],
            c["tokens_unspent"],
        )

    @admin.display(description="workers")
    def workers(self, obj):
        rows = job_workers(obj)
        if not rows:
            return "—"
        return format_html_join(
            "; ",
            "{}: {} samples{}",
            (
                (
                    r["worker"] or "unknown",
                    r["samples"],
                    f", holding {', '.join(r['holding'])}" if r["holding"] else "",
                )
                for r in rows
            ),
        )

    def has_add_permission(self, request):
        return request.user.has_perm(RUN_PERM)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        if change:
            return
        data = form.cleaned_data
        topics = (data.get("topics_text") or "").splitlines()
        created = job_create(
            generator=data["generator"],
            count=data["count"],
            mode=data["mode"],
            model_override=data.get("model_override") or "",
            **{name: data.get(name) for name in JOB_SAMPLING_FIELDS},
            seed=data.get("seed"),
            topics=topics,
            created_by=request.user,
            open_to_contributors=bool(data.get("open_to_contributors")),
            dispatch=False,
            aim=data.get("aim"),
        )
        obj.pk = created.pk
        obj.refresh_from_db()
        # After commit, still inside this request: the message reaches the next page.
        transaction.on_commit(lambda: self._dispatch_and_tell(request, created.pk))

    def _dispatch_and_tell(self, request, job_id: int) -> None:
        if job_dispatch(job_id=job_id):
            self.message_user(request, f"Job {job_id} sent to the workers.", messages.SUCCESS)
        else:
            self.message_user(
                request,
                f"Job {job_id} is queued, but the task broker did not answer: it will run "
                "when a worker is reachable (workers pick up queued jobs when they start), "
                "or select it and choose “Start” again.",
                messages.WARNING,
            )

    @admin.display(description="mode", ordering="mode")
    def mode_short(self, obj):
        return obj.mode

    @admin.display(description="created", ordering="created_at")
    def created(self, obj):
        return obj.created_at.strftime("%Y-%m-%d %H:%M")

    @admin.display(description="progress")
    def progress(self, obj):
        return format_html(
            '<progress class="job-progress" max="{}" value="{}" data-job="{}" data-status="{}">'
            "{}%</progress> "
            '<span class="job-progress-text">{} / {}</span>',
            obj.count,
            obj.done_count,
            obj.pk,
            obj.status,
            obj.progress_percent,
            obj.done_count,
            obj.count,
        )

    def get_urls(self):
        return [
            path(
                "<int:job_id>/progress/",
                self.admin_site.admin_view(self.progress_json),
                name="generation_generationjob_progress",
            ),
            *super().get_urls(),
        ]

    def progress_json(self, request, job_id):
        if not self.has_view_permission(request):
            raise PermissionDenied
        job = get_object_or_404(GenerationJob, pk=job_id)
        return JsonResponse(
            {
                "id": job.pk,
                "status": job.status,
                "done": job.done_count,
                "count": job.count,
                "published": job.published_count,
                "rejected": job.rejected_count,
                "rejection_counts": job.rejection_counts,
                "last_error": job.last_error,
                "tokens": job.tokens_generated,
            }
        )

    def _require_run(self, request):
        if not request.user.has_perm(RUN_PERM):
            raise PermissionDenied

    @admin.action(description="Start (or dispatch again) selected queued jobs")
    def start_jobs(self, request, queryset):
        self._require_run(request)
        sent = failed = 0
        for job in queryset.filter(status=GenerationJob.Status.QUEUED):
            if job_dispatch(job_id=job.pk):
                sent += 1
            else:
                failed += 1
        if failed:
            self.message_user(
                request,
                f"{failed} job(s) could not be dispatched: the task "
                "broker is unavailable. They stay queued and are sent when a "
                "worker starts, or start them again.",
                messages.ERROR,
            )
        if sent:
            self.message_user(request, f"{sent} job(s) dispatched.", messages.SUCCESS)

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request, queryset):
        self._require_run(request)
        for job in queryset:
            job_cancel(job=job)
        self.message_user(request, "Cancellation requested.", messages.SUCCESS)

    @admin.action(description="Re-run selected failed or cancelled jobs")
    def rerun_jobs(self, request, queryset):
        self._require_run(request)
        for job in queryset:
            job_rerun(job=job)
        self.message_user(request, "Re-run requested.", messages.SUCCESS)


@admin.register(Sample)
class SampleAdmin(ReadOnlyAdmin):
    list_display = ["id", "job", "index", "mode", "verdict", "tokens"]
    list_filter = ["verdict", ModeFilter]


class ContributorAddForm(forms.ModelForm):
    class Meta:
        model = Contributor
        fields = ["name"]

    def clean_name(self):
        from generation.names import name_skeleton

        name = self.cleaned_data["name"].strip()
        if Contributor.objects.filter(name_skeleton=name_skeleton(name)).exists():
            raise forms.ValidationError("A contributor's name looks the same to a reader.")
        return name


@admin.register(Contributor)
class ContributorAdmin(admin.ModelAdmin):
    """Contributors' API tokens: made here, shown once, stored hashed, revocable."""

    list_display = [
        "name",
        "token_prefix",
        "active",
        "signed_up",
        "created_at",
        "revoked_at",
        "strikes",
        "samples_done",
    ]
    list_filter = ["active", "signed_up"]
    actions = ["revoke"]
    form = ContributorAddForm

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self._shown

    _shown = [
        "name",
        "token_prefix",
        "active",
        "signed_up",
        "revoked_at",
        "strikes",
        "suspended_reason",
        "last_lease_at",
    ]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name"]
        return self._shown

    @admin.display(description="samples")
    def samples_done(self, obj):
        return obj.samples.count()

    def has_delete_permission(self, request, obj=None):
        return False  # their samples keep the name: revoke instead

    def save_model(self, request, obj, form, change):
        if change:
            return
        created, token = contributor_create(name=form.cleaned_data["name"])
        obj.pk = created.pk
        obj.refresh_from_db()
        self.message_user(
            request,
            f"API token for {created.name} (shown once, not stored): {token}",
            messages.WARNING,
        )

    @admin.action(description="Revoke the selected contributors' tokens")
    def revoke(self, request, queryset):
        for contributor in queryset:
            contributor_revoke(contributor=contributor)
        self.message_user(request, f"Revoked {queryset.count()} token(s).", messages.SUCCESS)


@admin.register(ExaminerVerdict)
class ExaminerVerdictAdmin(admin.ModelAdmin):
    """Reviewers are the members of the "Reviewers" group (Authentication → Groups); they
    give verdicts on the site, from an invention's page or a result line."""

    list_display = ("patent", "reviewer", "verdict", "updated_at")
    list_filter = ("verdict", "patent__generator_model", "patent__mode")
    search_fields = ("patent__public_id", "note")
    raw_id_fields = ("patent", "reviewer")
