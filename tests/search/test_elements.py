"""Claim-element mapping with the real MiniLM and the real index."""

import pytest
from django.utils.html import escape

from search.elements import claim_elements
from search.services import search_documents_sync, search_index_update
from search.store import reader_reset
from tests.factories import patent_published

CLAIM = (
    "1. A beverage mug comprising: a vessel with a base; an electric motor housed in the "
    "base; a magnetic stirrer driven by the motor through the floor of the vessel; and a "
    "rechargeable battery that powers the motor, wherein the stirrer is removable for cleaning."
)


@pytest.mark.unit
def test_a_claim_splits_into_preamble_and_elements():
    elements = claim_elements(CLAIM)
    assert elements[0] == "A beverage mug comprising"
    assert elements[1] == "a vessel with a base"
    assert "an electric motor housed in the base" in elements
    assert any(e.startswith("wherein the stirrer is removable") for e in elements)
    assert len(elements) == 6


@pytest.mark.unit
def test_a_short_query_is_one_element():
    assert claim_elements("self-stirring mug") == ["self-stirring mug"]
    assert claim_elements("") == []


@pytest.fixture
def indexed(settings, tmp_path, memo_embeddings):
    settings.INDEX_DIR = tmp_path / "elements"
    reader_reset()
    mug = patent_published(
        n=1,
        title="Self-stirring mug",
        abstract="A mug whose base holds a motor that turns a magnetic stirrer in the drink.",
        claims=[
            {"number": 1, "text": "A mug comprising a vessel, a base and a motor in the base."},
            {
                "number": 2,
                "text": "The mug of claim 1, wherein the motor drives a magnetic stirrer.",
            },
            {
                "number": 3,
                "text": "The mug of claim 1, wherein a rechargeable battery powers the motor.",
            },
        ],
    )
    patent_published(
        n=2,
        title="Folding ladder hook",
        abstract="A hook that holds a folding ladder on a wall bracket.",
        claims=[{"number": 1, "text": "A hook comprising a bracket and a hinge."}],
    )
    search_documents_sync()
    search_index_update()
    yield mug
    reader_reset()


@pytest.mark.django_db
def test_results_show_which_elements_they_cover(client, indexed):
    html = client.get("/search/", {"q": CLAIM}).content.decode()
    assert "Covers <strong>" in html and "of 6</strong> elements" in html
    chart = html.split('<details class="element-chart">')[1].split("</details>")[0]
    assert "Claim 3" in chart and "<mark>battery</mark>" in chart


@pytest.mark.django_db
def test_api_returns_the_element_table_when_asked(client, indexed):
    data = client.post(
        "/api/search", {"q": CLAIM, "elements": 1}, content_type="application/json"
    ).json()
    assert data["query_elements"] == claim_elements(CLAIM)
    top = data["results"][0]
    assert top["public_id"] == indexed.public_id
    table = top["elements"]
    assert table["elements"] == 6 and 0 < table["covered"] <= 6
    battery = next(r for r in table["rows"] if "battery" in r["element"])
    assert battery["passage"] == "claim 3" and "battery" in battery["shared_terms"]
    plain = client.get("/api/search", {"q": CLAIM}).json()
    assert "elements" not in plain["results"][0]


@pytest.fixture
def split_art(settings, tmp_path, memo_embeddings):
    """Two documents, each meeting part of the claim: together they meet it."""
    settings.INDEX_DIR = tmp_path / "combos"
    reader_reset()
    motor = patent_published(
        n=11,
        title="Motorised stirring base",
        abstract="A base with an electric motor that turns a magnetic stirrer through a floor.",
        claims=[
            {"number": 1, "text": "A base comprising an electric motor and a magnetic stirrer."},
        ],
    )
    battery = patent_published(
        n=12,
        title="Rechargeable cup",
        abstract="A beverage mug with a rechargeable battery and a removable, washable insert.",
        claims=[
            {"number": 1, "text": "A beverage mug comprising a vessel and a rechargeable battery."},
            {
                "number": 2,
                "text": "The mug of claim 1, wherein the insert is removable for cleaning.",
            },
        ],
    )
    search_documents_sync()
    search_index_update()
    yield motor, battery
    reader_reset()


@pytest.mark.django_db
def test_pairs_that_together_meet_the_claim(client, split_art, settings):
    motor, battery = split_art
    settings.SEARCH_ELEMENT_THRESHOLD = 0.45
    data = client.post(
        "/api/search",
        {"q": CLAIM, "combinations": 1, "elements": 1},
        content_type="application/json",
    ).json()
    combos = data["combinations"]
    assert combos, data
    best = combos[0]
    assert set(best["results"]) == {motor.public_id, battery.public_id}
    alone = {r["public_id"]: r["elements"]["covered"] for r in data["results"] if r.get("elements")}
    # Together they meet more of the claim than either does alone.
    assert best["covered"] > max(alone.get(motor.public_id, 0), alone.get(battery.public_id, 0))
    sources = {row["public_id"] for row in best["rows"]}
    assert sources == {motor.public_id, battery.public_id}  # each brings elements
    html = client.get("/search/", {"q": CLAIM}).content.decode()
    assert "<h2>Combinations</h2>" in html


@pytest.mark.django_db
def test_printable_report_names_each_result_with_its_proof_and_element_table(client, indexed):
    page = client.get("/search/", {"q": CLAIM}).content.decode()
    assert "/search/report/?" in page
    response = client.get("/search/report/", {"q": CLAIM, "before": "2100-01-01"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Prior-art search report" in html
    assert "Published before: 2100-01-01" in html
    assert '<time datetime="' in html  # the time of the search
    for element in claim_elements(CLAIM):
        assert f"<li>{escape(element)}</li>" in html
    mug = html.split("Self-stirring mug")[1].split("</section>")[0]
    assert indexed.public_id in mug and indexed.content_hash in mug
    assert f"http://testserver{indexed.get_absolute_url()}" in mug
    assert "Meets " in mug and "<mark>battery</mark>" in mug
    # Untrusted text stays text.
    hostile = client.get("/search/report/", {"q": "<script>alert(1)</script> mug"})
    assert "<script>alert(1)</script>" not in hostile.content.decode()
