from django.contrib.sitemaps.views import sitemap
from django.urls import path, re_path

from patents import views

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
    path("downloads/", views.downloads, name="downloads"),
    path("downloads/<str:name>", views.download_file, name="download-file"),
    path("robots.txt", views.robots, name="robots"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("feed.atom", views.LatestFeed(), name="feed"),
    path(
        "sitemap.xml",
        sitemap,
        {"sitemaps": {"patents": views.PatentSitemap}},
        name="django.contrib.sitemaps.views.sitemap",
    ),
]
