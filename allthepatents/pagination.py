"""Pages deep into a table of millions of rows.

A page of ``qs[offset:offset + n]`` makes the database read every row it skips, so page
20,000 of the inventions read half a million rows from the table. Reading only the keys
first lets an index that holds the ordering and the key skip them without touching the
table (PostgreSQL's index-only scan; SQLite's covering index); the page's rows are then
fetched by key.
"""

from django.core.paginator import Paginator


class KeysFirstPaginator(Paginator):
    """A Paginator over an ordered queryset that slices its primary keys, then fetches the
    page's rows by key, in the queryset's order. ``count``: the number of rows where the
    caller has it (a recent count saves counting a million rows for every page)."""

    def __init__(self, object_list, per_page, *, count: int | None = None, **kwargs):
        super().__init__(object_list, per_page, **kwargs)
        if count is not None:
            self.count = count  # Paginator.count is a cached_property: this is its value

    def _get_page(self, object_list, number, paginator):
        keys = list(object_list.values_list("pk", flat=True))
        rows = object_list.model._default_manager.in_bulk(keys)
        return super()._get_page([rows[k] for k in keys if k in rows], number, paginator)
