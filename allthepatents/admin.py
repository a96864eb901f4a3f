from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records the app writes and nobody edits: published content, ledger, samples.

    These tables hold millions of rows: the list does not count them twice (a full count
    beside the filtered one), and is ordered by key, which its index serves."""

    show_full_result_count = False
    ordering = ["-pk"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
