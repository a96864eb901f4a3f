from django.contrib import admin, messages

from allthepatents.admin import ReadOnlyAdmin
from search.models import EmbeddingShard


@admin.register(EmbeddingShard)
class EmbeddingShardAdmin(ReadOnlyAdmin):
    """A sharded index build (`search_index shards`): which worker has which shard, how far
    it is, and what failed."""

    list_display = [
        "pk",
        "status",
        "first_id",
        "last_id",
        "progress",
        "worker",
        "device",
        "attempts",
        "rate",
        "heartbeat_at",
    ]
    list_filter = ["status", "embedding_model"]
    exclude = ["vectors"]  # up to tens of MB of float32 per shard
    actions = ["queue_again"]

    @admin.display(description="embedded")
    def progress(self, obj):
        return f"{obj.done:,} of {obj.planned:,}"

    @admin.display(description="vectors/s")
    def rate(self, obj):
        return f"{obj.done / obj.seconds:.0f}" if obj.seconds else "-"

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields if f.name != "vectors"]

    @admin.action(description="Queue the plan's waiting, failed and silent shards again")
    def queue_again(self, request, queryset):
        from search.shards import embedding_shards_resume

        queued = embedding_shards_resume()
        self.message_user(request, f"queued {len(queued)} shards", messages.SUCCESS)
