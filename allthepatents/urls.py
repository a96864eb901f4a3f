from django.contrib import admin
from django.contrib.auth.views import LoginView, LogoutView
from django.urls import include, path, re_path

from allthepatents import views
from allthepatents.api import api_not_found
from allthepatents.openapi import api_openapi

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/login/", LoginView.as_view(), name="login"),
    path("accounts/logout/", LogoutView.as_view(), name="logout"),
    path("api/openapi.json", api_openapi, name="api-openapi"),
    path("", include("generation.urls")),
    path("", include("search.urls")),
    path("", include("patents.urls")),
    # Last: any other path under /api/ is answered in the API's JSON error shape.
    re_path(r"^api(?:/.*)?$", api_not_found),
]

handler404 = "patents.views.page_not_found"
handler500 = "allthepatents.views.server_error"
