from django.conf import settings
from django.db import models

from generation.sampling import JOB_SAMPLING_FIELDS, SAMPLING_DEFAULTS
from generation.vocabulary import BACKEND_OPENAI, BACKEND_TRANSFORMERS
from patents import vocabulary


class Generator(models.Model):
    """A registered text generator: a model, where it lives, and how to prompt it."""

    class Backend(models.TextChoices):
        TRANSFORMERS = BACKEND_TRANSFORMERS, "Local transformers (CPU or CUDA)"
        OPENAI = BACKEND_OPENAI, "OpenAI-compatible HTTP endpoint (vLLM)"

    class PromptFormat(models.TextChoices):
        KL3M = "kl3m", "kl3m patent markdown"
        FEWSHOT = "fewshot", "Few-shot patent markdown"
        CHAT_42DOT = "chat-42dot", "42dot SFT chat"
        KULLM3 = "kullm3", "KULLM3 Llama-2 chat"

    name = models.SlugField(max_length=100, unique=True)
    model_id = models.CharField(max_length=300, help_text="Hub id, e.g. alea-institute/...")
    local_path = models.CharField(
        max_length=500, blank=True, help_text="A local model directory; overrides the hub id."
    )
    revision = models.CharField(max_length=100, blank=True, default="main")
    backend = models.CharField(max_length=20, choices=Backend.choices)
    prompt_format = models.CharField(max_length=20, choices=PromptFormat.choices)
    language = models.CharField(max_length=8, default="en")
    requires_gpu = models.BooleanField(default=False)
    default_params = models.JSONField(default=dict, blank=True)
    is_default = models.BooleanField(default=False)
    enabled = models.BooleanField(default=True)
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["-is_default", "name"]

    def __str__(self):
        return self.name

    @property
    def source(self) -> str:
        return self.local_path or self.model_id


class Contributor(models.Model):
    """Someone who generates on their own machine and submits over HTTP (#18). The API
    token is shown once when made; only its SHA-256 is kept."""

    name = models.CharField(max_length=100, unique=True)
    # The name with look-alike characters, case, width and punctuation folded away: two
    # names with one skeleton would read as the same person on the credits page.
    name_skeleton = models.CharField(max_length=200, unique=True)
    token_hash = models.CharField(max_length=64, unique=True)
    token_prefix = models.CharField(max_length=12, help_text="Tells tokens apart; not secret.")
    active = models.BooleanField(default=True)
    signed_up = models.BooleanField(
        default=False, help_text="Made by public sign-up (CONTRIBUTOR_SIGNUP), not by an admin."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    strikes = models.PositiveIntegerField(
        default=0, help_text="Units refused in a row; CONTRIBUTOR_MAX_STRIKES suspends the token."
    )
    suspended_reason = models.CharField(max_length=300, blank=True)
    last_lease_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return self.name


class GenerationJob(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Mode(models.TextChoices):
        TOP_DOWN = vocabulary.TOP_DOWN, "Top-down (title, abstract, claims)"
        BOTTOM_UP = vocabulary.BOTTOM_UP, "Bottom-up (claims, abstract, title)"
        MIXED = "mixed", "Mixed (alternating)"

    generator = models.ForeignKey(Generator, on_delete=models.PROTECT, related_name="jobs")
    model_override = models.CharField(
        max_length=500, blank=True, help_text="A local model directory used instead."
    )
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.TOP_DOWN)
    count = models.PositiveIntegerField(default=10)
    temperature = models.FloatField(default=SAMPLING_DEFAULTS.temperature)
    top_p = models.FloatField(default=SAMPLING_DEFAULTS.top_p)
    top_k = models.PositiveIntegerField(default=SAMPLING_DEFAULTS.top_k)
    repetition_penalty = models.FloatField(default=SAMPLING_DEFAULTS.repetition_penalty)
    max_new_tokens = models.PositiveIntegerField(default=SAMPLING_DEFAULTS.max_new_tokens)
    seed = models.BigIntegerField(default=0)
    topics = models.JSONField(default=list, blank=True)
    # Fixed at creation so that every worker cuts the job into the same batches.
    batch_size = models.PositiveIntegerField(default=16)
    open_to_contributors = models.BooleanField(
        default=False, help_text="Contributors' workers may lease its batches over HTTP."
    )
    # The sampler follows the document's skeleton (generation/form.py): fixed at creation,
    # because a sample proves only under the rules it was drawn with.
    form = models.CharField(max_length=16, blank=True, default="")
    # What the job was aimed at (generation/aiming.py): {"kind": "cpc"|"search", "value",
    # "seeds": [the reference patents whose titles or claim preambles start its samples]}.
    aim = models.JSONField(default=dict, blank=True)

    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    done_count = models.PositiveIntegerField(default=0)
    published_count = models.PositiveIntegerField(default=0)
    rejected_count = models.PositiveIntegerField(default=0)
    rejection_counts = models.JSONField(default=dict, blank=True)
    # Per sample mode (a mixed job has both): {"top-down": {"generated": n, "published": m}}.
    # /stats/ sums these over jobs instead of counting millions of sample rows a request.
    mode_counts = models.JSONField(default=dict, blank=True)
    # Per contributor whose machine sampled some of the job, by the contributor's id:
    # {"7": {"samples": n, "published": m}}. /contributors/ sums these over jobs: counting
    # every sample row per contributor took 1.0-1.5 s at four million samples.
    contributor_counts = models.JSONField(default=dict, blank=True)
    tokens_generated = models.BigIntegerField(default=0)
    # Samples whose decoding ended once the gate's verdict was certain, and the tokens of
    # their budget (max_new_tokens each) they left unspent: an upper bound on the saving.
    early_stopped_count = models.PositiveIntegerField(default=0)
    early_stop_tokens_unspent = models.BigIntegerField(default=0)
    worker_seconds = models.FloatField(default=0.0)
    last_error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(
        default=0,
        help_text="Times a worker joined the job (a worker whose task is retried joins again).",
    )

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("run_generation", "Can start, cancel and re-run generation jobs")]

    def __str__(self):
        return f"Job {self.pk} ({self.generator_id}, {self.mode}, {self.count})"

    @property
    def progress_percent(self) -> int:
        return int(100 * self.done_count / self.count) if self.count else 100

    @property
    def is_active(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)

    def sampling_params(self) -> dict:
        return {**{name: getattr(self, name) for name in JOB_SAMPLING_FIELDS}, "form": self.form}


class JobBatch(models.Model):
    """A lease on the sample indexes [start, end) of a job: the unit by which several
    workers share one job. A worker takes a batch nobody holds (or whose lease ran out),
    renews the lease while it generates, and deletes the row when the batch is recorded:
    whether a batch is done is read from its Sample rows, never from here."""

    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="batches")
    start = models.PositiveIntegerField()
    end = models.PositiveIntegerField()
    owner = models.CharField(max_length=200)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "start"], name="jobbatch_unique_job_start")
        ]

    def __str__(self):
        return f"job {self.job_id} [{self.start}, {self.end}) held by {self.owner}"


class Contribution(models.Model):
    """A contributor's submitted unit, checked by a worker (the proof of sampling needs the
    model, which web processes do not load)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ACCEPTED = "accepted", "Accepted"
        REFUSED = "refused", "Refused"

    contributor = models.ForeignKey(
        Contributor, on_delete=models.PROTECT, related_name="contributions"
    )
    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="contributions")
    unit = models.CharField(max_length=200, help_text="The lease owner: contributor:id:nonce.")
    samples = models.JSONField(default=list)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"contribution {self.pk} ({self.status})"


class Sample(models.Model):
    """One generated text, published or rejected; (job, index) makes work idempotent."""

    class Verdict(models.TextChoices):
        PUBLISHED = "published", "Published"
        REJECTED = "rejected", "Rejected"

    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="samples")
    index = models.PositiveIntegerField()
    mode = models.CharField(max_length=16)
    seed = models.BigIntegerField()
    prompt = models.TextField()
    raw_text = models.TextField()
    tokens = models.PositiveIntegerField(default=0)
    finished = models.BooleanField(default=False, help_text="The model emitted end-of-text.")
    verdict = models.CharField(max_length=16, choices=Verdict.choices, db_index=True)
    reasons = models.JSONField(default=list, blank=True)
    details = models.JSONField(default=dict, blank=True, help_text="e.g. the near-copy found")
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid of the worker")
    contributor = models.ForeignKey(
        Contributor, null=True, blank=True, on_delete=models.PROTECT, related_name="samples"
    )
    patent = models.OneToOneField(
        "patents.Patent", null=True, blank=True, on_delete=models.SET_NULL, related_name="sample"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job_id", "index"]
        constraints = [
            models.UniqueConstraint(fields=["job", "index"], name="sample_unique_job_index")
        ]

    def __str__(self):
        return f"job {self.job_id} sample {self.index}: {self.verdict}"


class ExaminerVerdict(models.Model):
    """What a reviewer (a member of the admin-managed "Reviewers" group) says of a
    generated invention: the measure of the hit rate the seed means, beside the gate's pass
    rate. One per reviewer and invention, changeable."""

    class Kind(models.TextChoices):
        RELEVANT = "relevant", "Relevant prior art"
        ON_TOPIC = "on_topic", "On topic but not usable"
        NONSENSE = "nonsense", "Nonsense"

    patent = models.ForeignKey(
        "patents.Patent", on_delete=models.CASCADE, related_name="examiner_verdicts"
    )
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="examiner_verdicts"
    )
    verdict = models.CharField(max_length=16, choices=Kind.choices, db_index=True)
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["patent", "reviewer"], name="examiner_verdict_one_per_reviewer"
            )
        ]

    def __str__(self):
        return f"{self.reviewer_id} on {self.patent_id}: {self.verdict}"


class BacktestRun(models.Model):
    """One `backtest` (generation/backtest.py): a generator trained before ``cutoff`` against
    the real patents published after it. ``report`` keeps every figure and the best pairs."""

    model = models.CharField(max_length=500)
    cutoff = models.DateField()
    generated = models.PositiveIntegerField()
    passed_gate = models.PositiveIntegerField()
    later_patents = models.PositiveIntegerField()
    hits = models.PositiveIntegerField(
        help_text="generated inventions that anticipate a later patent"
    )
    anticipated = models.PositiveIntegerField(help_text="later patents anticipated")
    threshold = models.FloatField()
    cpu_seconds = models.FloatField(help_text="generation CPU-seconds")
    report = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"Backtest {self.pk} ({self.model}, cutoff {self.cutoff})"
