"""The base of the site's Atom feeds (the newest inventions, and search alerts)."""

from django.contrib.syndication.views import Feed
from django.utils.feedgenerator import Atom1Feed

from patents.presentation import canonical_url, display_title


class PatentFeed(Feed):
    """Atom entries for inventions: the base of the site feed and the search alerts."""

    feed_type = Atom1Feed
    item_guid_is_permalink = True

    def item_title(self, item):
        return display_title(item)

    def item_description(self, item):
        return item.abstract

    def item_link(self, item):
        return item.get_absolute_url()

    def item_pubdate(self, item):
        return item.published_at

    def item_guid(self, item):
        return canonical_url(item)
