from django.db import models


class IndexedVector(models.Model):
    """Maps a FAISS id (this row's id) to a patent and, for claim vectors, a claim number.

    The rows are the source of truth: the FAISS file is rebuilt from them when it is lost.
    """

    patent = models.ForeignKey(
        "patents.Patent", on_delete=models.CASCADE, related_name="indexed_vectors"
    )
    claim_number = models.PositiveIntegerField(null=True, blank=True)  # null: document vector
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["patent", "claim_number"], name="vector_unique_patent_claim"
            ),
        ]

    def __str__(self):
        return f"vector {self.pk}: patent {self.patent_id} claim {self.claim_number}"


class KeywordDocument(models.Model):
    """Marks a patent as fed to the keyword index (SQLite FTS5 or PostgreSQL tsvector)."""

    patent = models.OneToOneField(
        "patents.Patent",
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="keyword_document",
    )
    indexed_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"keyword document for patent {self.patent_id}"


class StoredQuery(models.Model):
    """A search query too long for a URL, kept under a short key so that its result page
    stays linkable (``/search/?qid=KEY``). The key is derived from the text: the same
    query always gets the same key, and storing it twice stores it once."""

    key = models.CharField(max_length=24, primary_key=True)
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    # Renewed whenever the query is stored again; pruning goes by it.
    used_at = models.DateTimeField(null=True, db_index=True)

    def __str__(self):
        return f"query {self.key}"


class SearchTally(models.Model):
    """How many searches landed in a CPC area on a day (the subclasses of the reference
    patents a search ranked first, and of its CPC filter). Nothing else of a search is
    kept: not who searched, not the query, which may be a confidential claim. Rows older
    than SEARCH_TALLY_DAYS are deleted."""

    day = models.DateField(db_index=True)
    cpc = models.CharField(max_length=16)
    searches = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "cpc"], name="tally_day_cpc")]

    def __str__(self):
        return f"{self.day} {self.cpc}: {self.searches}"


class EmbeddingShard(models.Model):
    """A run of vector rows (ids ``first_id`` to ``last_id``) that one worker embeds on its
    own, on any machine that reaches the database and the broker: a bulk build spread over
    workers (`search_index shards`). The vectors wait here until the merge adds them to the
    index, in id order, and are then dropped (``vectors`` emptied)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        MERGED = "merged"
        FAILED = "failed"

    embedding_model = models.CharField(max_length=200)
    first_id = models.BigIntegerField()
    last_id = models.BigIntegerField()
    # Document rows up to this id were already in the index when the shard was planned
    # (a documents-first build): the shard embeds its claims only.
    documents_through = models.BigIntegerField(default=0)
    planned = models.PositiveIntegerField()  # rows the shard held when planned
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    done = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    device = models.CharField(max_length=40, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    seconds = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    # ids (int64) then vectors (float32), as written by numpy.savez: about 1.5 KB a vector.
    vectors = models.BinaryField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["first_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["embedding_model", "first_id"], name="shard_unique_model_first"
            )
        ]

    def __str__(self):
        return f"shard {self.pk}: vectors {self.first_id}-{self.last_id} ({self.status})"
