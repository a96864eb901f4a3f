from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records the app writes and nobody edits: published content, ledger, samples."""

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
