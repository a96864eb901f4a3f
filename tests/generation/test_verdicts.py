"""Examiners' verdicts: reviewers (the admin-managed group) mark generated inventions from
an invention's page or a result line; one verdict per reviewer and invention, changeable;
/stats/ shows the shares with intervals and the cost per relevant invention; the verdicts
export as CSV and JSON, without who gave them."""

import csv
import io

import pytest
from django.contrib.auth.models import Group, User

from generation.models import ExaminerVerdict
from generation.verdicts import (
    REVIEWERS_GROUP,
    VerdictError,
    stats_verdicts,
    verdict_set,
    wilson_interval,
)
from tests.factories import patent_published
from tests.helpers import api_pages


@pytest.fixture
def reviewer(db):
    user = User.objects.create_user("examiner", password="a long pass phrase 42")
    user.groups.add(Group.objects.get(name=REVIEWERS_GROUP))  # made by a migration
    return user


@pytest.fixture
def reviewer_client(client, reviewer):
    client.force_login(reviewer)
    return client


@pytest.mark.django_db
def test_one_verdict_per_reviewer_and_invention_and_it_can_change(reviewer):
    patent = patent_published(n=1)
    verdict_set(patent=patent, reviewer=reviewer, verdict="nonsense", note="word salad")
    verdict_set(patent=patent, reviewer=reviewer, verdict="relevant", note="")
    rows = list(ExaminerVerdict.objects.filter(patent=patent))
    assert [(r.verdict, r.note) for r in rows] == [("relevant", "")]


@pytest.mark.django_db
def test_only_reviewers_judge_only_published_generated_inventions(reviewer):
    patent = patent_published(n=1)
    outsider = User.objects.create_user("visitor", password="another long phrase 7")
    with pytest.raises(VerdictError, match="Reviewers group"):
        verdict_set(patent=patent, reviewer=outsider, verdict="relevant")
    with pytest.raises(VerdictError, match="one of"):
        verdict_set(patent=patent, reviewer=reviewer, verdict="great")
    with pytest.raises(VerdictError, match="at most"):
        verdict_set(patent=patent, reviewer=reviewer, verdict="relevant", note="x" * 2001)
    assert not ExaminerVerdict.objects.exists()


@pytest.mark.django_db
def test_a_reviewer_marks_from_the_page_and_sees_it_in_their_history(reviewer_client):
    patent = patent_published(n=1)
    page = reviewer_client.get(patent.get_absolute_url()).content.decode()
    assert 'class="verdict-form"' in page and "Relevant prior art" in page
    response = reviewer_client.post(
        f"/p/{patent.public_id}/verdict",
        {
            "verdict": "on_topic",
            "note": "<script>alert(1)</script>",
            "next": "https://evil.example/",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == patent.get_absolute_url()  # not the foreign next
    history = reviewer_client.get("/reviewers/verdicts/").content.decode()
    assert "On topic but not usable" in history
    assert "<script>alert(1)</script>" not in history and "&lt;script&gt;" in history
    again = reviewer_client.get(patent.get_absolute_url()).content.decode()
    assert "now: On topic but not usable" in again


@pytest.mark.django_db
def test_visitors_see_no_form_and_cannot_post(client, reviewer):
    patent = patent_published(n=1)
    assert 'class="verdict-form"' not in client.get(patent.get_absolute_url()).content.decode()
    anonymous = client.post(f"/p/{patent.public_id}/verdict", {"verdict": "relevant"})
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    outsider = User.objects.create_user("visitor", password="another long phrase 7")
    client.force_login(outsider)
    assert client.post(f"/p/{patent.public_id}/verdict", {"verdict": "relevant"}).status_code == 403
    assert not ExaminerVerdict.objects.exists()


@pytest.mark.django_db
def test_stats_show_the_shares_with_intervals_and_the_export_names_no_reviewer(client, reviewer):
    patents = [patent_published(n=n) for n in range(1, 5)]
    for patent, verdict in zip(
        patents, ["relevant", "relevant", "on_topic", "nonsense"], strict=True
    ):
        verdict_set(patent=patent, reviewer=reviewer, verdict=verdict, note="=1+1")
    rows = stats_verdicts(
        cost_by_model=[{"model": "test/model", "mode": "top-down", "seconds_per_invention": 10.0}]
    )
    assert len(rows) == 1
    row = rows[0]
    assert (row["verdicts"], row["inventions"]) == (4, 4)
    relevant = row["shares"]["relevant"]
    assert relevant["count"] == 2 and relevant["share"] == 0.5
    assert (relevant["low"], relevant["high"]) == pytest.approx(wilson_interval(2, 4))
    assert relevant["low"] < 0.5 < relevant["high"]
    assert row["seconds_per_relevant"] == 20.0
    page = client.get("/stats/").content.decode()
    assert "Gate pass rate by generator and mode" in page
    assert "Examiners&#x27; verdicts" in page or "Examiners' verdicts" in page
    assert 'class="verdict-stats"' in page
    text = _csv_text(client)
    exported = list(csv.DictReader(io.StringIO(text)))
    assert len(exported) == 4 and exported[0]["note"] == "'=1+1"  # no formula injection
    api = client.get("/api/verdicts").json()["verdicts"]
    assert {v["verdict"] for v in api} == {"relevant", "on_topic", "nonsense"}
    assert "examiner" not in text


def _csv_text(client) -> str:
    response = client.get("/stats/verdicts.csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    return b"".join(response.streaming_content).decode()


@pytest.mark.django_db
def test_the_verdicts_api_pages_through_them_all_in_the_order_given(client, reviewer):
    """Every verdict was one JSON answer, however many; now a page of at most 1000, each
    naming the next, so that a harvester gets each verdict exactly once."""
    patents = [patent_published(n=n) for n in range(1, 8)]
    for n, patent in enumerate(patents):
        verdict_set(patent=patent, reviewer=reviewer, verdict="relevant", note=f"note {n}")
    verdict_set(patent=patents[0], reviewer=reviewer, verdict="nonsense", note="changed")
    seen, pages = api_pages(client, "/api/verdicts?limit=3", "verdicts")
    assert pages == 3
    assert [v["public_id"] for v in seen] == [p.public_id for p in patents]
    assert (seen[0]["verdict"], seen[0]["note"]) == ("nonsense", "changed")  # in its place
    whole = client.get("/api/verdicts").json()
    assert whole["next"] is None and len(whole["verdicts"]) == 7
    assert len(list(csv.DictReader(io.StringIO(_csv_text(client))))) == 7
    for bad in ("limit=0", "limit=1001", "limit=ten", "after=-1", "after=1e3", "after=" + "9" * 50):
        refused = client.get(f"/api/verdicts?{bad}")
        assert refused.status_code == 400 and refused.json()["status"] == 400, bad
    assert client.get("/api/verdicts?after=" + "9" * 18).json() == {"verdicts": [], "next": None}


@pytest.mark.unit
def test_wilson_intervals_are_sane_at_the_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 0.25 < high < 0.35
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and 0.65 < low < 0.75


@pytest.mark.django_db
def test_a_reviewer_marks_from_a_result_line(reviewer_client):
    from search.services import search_documents_sync

    patent = patent_published(n=1)
    search_documents_sync()
    page = reviewer_client.get("/search/", {"q": "widget rotating brush"}).content.decode()
    assert f'action="/p/{patent.public_id}/verdict"' in page
    response = reviewer_client.post(
        f"/p/{patent.public_id}/verdict",
        {"verdict": "relevant", "next": "/search/?q=widget+rotating+brush"},
    )
    assert response["Location"] == "/search/?q=widget+rotating+brush"
    assert ExaminerVerdict.objects.get(patent=patent).verdict == "relevant"
