from django.contrib.sitemaps.views import index as sitemap_index
from django.urls import path, re_path

from patents import api, views

urlpatterns = [
    path("", views.home, name="home"),
    path("patents/", views.browse, name="browse"),
    path("patents/random/", views.random_patent, name="random"),
    path("p/<str:public_id>/", views.patent_detail, name="patent"),
    re_path(
        r"^p/(?P<public_id>[a-z0-9]+)\.(?P<fmt>md|json)$",
        views.patent_download,
        name="patent-download",
    ),
    path("ledger/", views.ledger, name="ledger"),
    path("ledger/heads.json", views.ledger_heads_json, name="ledger-heads"),
    path("api/ledger", api.api_ledger, name="api-ledger"),
    path("downloads/", views.downloads, name="downloads"),
    path("downloads/<str:name>", views.download_file, name="download-file"),
    path("robots.txt", views.robots, name="robots"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("feed.atom", views.LatestFeed(), name="feed"),
    # An index of sitemap files: one file holds PatentSitemap.limit URLs, and a crawler
    # finds the inventions past the first file only through the index's ?p= pages.
    path(
        "sitemap.xml",
        sitemap_index,
        {"sitemaps": views.SITEMAPS, "sitemap_url_name": "sitemap-section"},
        name="sitemap",
    ),
    path("sitemap-<section>.xml", views.sitemap_file, name="sitemap-section"),
]
