"""The base of the site's Atom feeds (the newest inventions, and search alerts)."""

from django.contrib.syndication.views import Feed
from django.utils.feedgenerator import Atom1Feed

from patents.presentation import canonical_url, display_title
from patents.text import xml_text_clean


def _xml_safe(value):
    if isinstance(value, str):
        return xml_text_clean(value)
    if isinstance(value, list | tuple):
        return type(value)(_xml_safe(v) for v in value)
    return value


class XmlSafeAtom1Feed(Atom1Feed):
    """Atom whose every text is something XML can carry: titles, abstracts and queries are
    untrusted, and one control character or U+FFFF made the feed a 500 or malformed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*_xml_safe(args), **{k: _xml_safe(v) for k, v in kwargs.items()})

    def add_item(self, *args, **kwargs):
        super().add_item(*_xml_safe(args), **{k: _xml_safe(v) for k, v in kwargs.items()})


class PatentFeed(Feed):
    """Atom entries for inventions: the base of the site feed and the search alerts."""

    feed_type = XmlSafeAtom1Feed
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
