from django.urls import path

from patents import views

urlpatterns = [
    path("", views.home, name="home"),
]
