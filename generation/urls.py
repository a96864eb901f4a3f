from django.urls import path

from generation import views

urlpatterns = [
    path("stats/", views.stats, name="stats"),
    path("stats/verdicts.csv", views.verdicts_csv, name="verdicts_csv"),
    path("coverage/", views.coverage, name="coverage"),
    path("p/<str:public_id>/verdict", views.verdict_submit, name="verdict_submit"),
    path("reviewers/verdicts/", views.reviewer_verdicts, name="reviewer_verdicts"),
    path("api/verdicts", views.api_verdicts, name="api_verdicts"),
    path("contributors/", views.contributors, name="contributors"),
    path("contributors/signup/", views.contributor_signup, name="contributor_signup"),
    path("api/contribute/lease", views.api_contribute_lease, name="api_contribute_lease"),
    path("api/contribute/submit", views.api_contribute_submit, name="api_contribute_submit"),
    path("api/contribute/renew", views.api_contribute_renew, name="api_contribute_renew"),
    path("api/contribute/release", views.api_contribute_release, name="api_contribute_release"),
    path("api/contribute/status", views.api_contribute_status, name="api_contribute_status"),
]
