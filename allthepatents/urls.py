from django.contrib import admin
from django.contrib.auth.views import LoginView, LogoutView
from django.urls import include, path

from allthepatents import views
from allthepatents.openapi import api_openapi

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/login/", LoginView.as_view(), name="login"),
    path("accounts/logout/", LogoutView.as_view(), name="logout"),
    path("api/openapi.json", api_openapi, name="api-openapi"),
    # Before search's: it ends with the catch-all for unknown /api/ paths.
    path("", include("generation.urls")),
    path("", include("search.urls")),
    path("", include("patents.urls")),
]

handler404 = "patents.views.page_not_found"
handler500 = "allthepatents.views.server_error"
