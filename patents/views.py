from django.shortcuts import render

from patents.selectors import patent_counts, patents_latest


def home(request):
    return render(
        request, "home.html", {"counts": patent_counts(), "latest": patents_latest(limit=10)}
    )
