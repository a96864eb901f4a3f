from django.urls import path

from generation import views

urlpatterns = [
    path("stats/", views.stats, name="stats"),
]
