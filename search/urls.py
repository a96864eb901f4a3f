from django.urls import path, re_path

from search import views

urlpatterns = [
    path("search/", views.search_page, name="search"),
    path("search/export.<str:fmt>", views.search_export, name="search-export"),
    path("search/report/", views.search_report, name="search-report"),
    path("search/feed.atom", views.SearchAlertFeed(), name="search-feed"),
    path("search/like/<str:public_id>/", views.search_like, name="search-like"),
    path("api/search", views.api_search, name="api-search"),
    path("api/patents/<str:public_id>", views.api_patent, name="api-patent"),
    path("api/openapi.json", views.api_openapi, name="api-openapi"),
    re_path(r"^api(?:/.*)?$", views.api_not_found),
]
