from django.urls import path

from search import api, views
from search.feeds import SearchAlertFeed

urlpatterns = [
    path("search/", views.search_page, name="search"),
    path("search/export.<str:fmt>", views.search_export, name="search-export"),
    path("search/report/", views.search_report, name="search-report"),
    path("search/feed.atom", SearchAlertFeed(), name="search-feed"),
    path("search/like/<str:public_id>/", views.search_like, name="search-like"),
    path("api/search", api.api_search, name="api-search"),
    path("api/patents/<str:public_id>", api.api_patent, name="api-patent"),
]
