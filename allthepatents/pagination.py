"""Pages deep into a table of millions of rows.

A page of ``qs[offset:offset + n]`` makes the database read every row it skips, so page
20,000 of the inventions read half a million rows from the table. Reading only the keys
first lets an index that holds the ordering and the key skip them without touching the
table (PostgreSQL's index-only scan; SQLite's covering index); the page's rows are then
fetched by key. A page in the second half is counted from the end, along the same index
read backwards: no page skips more than half the rows, and the last (the oldest
inventions) skips none.
"""

from django.core.paginator import Paginator


class KeysFirstPaginator(Paginator):
    """A Paginator over an ordered queryset (ordered to the last key: its reverse is then
    its mirror) that slices its primary keys from the nearer end, then fetches the page's
    rows by key, in the queryset's order. ``count``: the number of rows where the caller
    has it (a count the writes keep saves counting a million rows for every page)."""

    def __init__(self, object_list, per_page, *, count: int | None = None, **kwargs):
        super().__init__(object_list, per_page, **kwargs)
        if count is not None:
            self.count = count  # Paginator.count is a cached_property: this is its value

    def page(self, number):
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = bottom + self.per_page
        if top + self.orphans >= self.count:
            top = self.count
        keys = self.object_list.values_list("pk", flat=True)
        if bottom > self.count - top:
            keys = list(keys.reverse()[self.count - top : self.count - bottom])[::-1]
        else:
            keys = list(keys[bottom:top])
        rows = self.object_list.model._default_manager.in_bulk(keys)
        return self._get_page([rows[k] for k in keys if k in rows], number, self)
