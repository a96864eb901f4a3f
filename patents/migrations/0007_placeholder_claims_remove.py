"""Canceled-claim placeholders ("1-3. (canceled)") and claims headings ("What is claimed:")
imported as claims of reference patents before the importer dropped them: removed, with their
claim vectors, and each patent's content hash and keyword document brought up to date (the
next ``search_index update`` rewrites the keyword document). Generated inventions are left
as published: their text is what the ledger dated."""

from django.db import migrations
from django.db.models import Q


def placeholder_claims_remove(apps, schema_editor):
    from patents.text import claim_is_placeholder, content_hash

    Claim = apps.get_model("patents", "Claim")
    Patent = apps.get_model("patents", "Patent")
    IndexedVector = apps.get_model("search", "IndexedVector")
    KeywordDocument = apps.get_model("search", "KeywordDocument")
    # Narrowed in SQL first: "claim" alone would read every dependent claim of the corpus.
    candidates = Claim.objects.filter(patent__origin="reference").filter(
        Q(text__icontains="cancel")
        | Q(text__icontains="delete")
        | Q(text__istartswith="what")
        | Q(text__istartswith="claim")
        | Q(text__istartswith="i claim")
        | Q(text__istartswith="we claim")
        | Q(text__istartswith="the invention claimed")
    )
    doomed: dict[int, list[int]] = {}
    for pk, patent_id, number, text in candidates.values_list(
        "pk", "patent_id", "number", "text"
    ).iterator():
        if len(text) < 80 and claim_is_placeholder(text):
            doomed.setdefault(patent_id, []).append(pk)
    for patent_id, claim_pks in doomed.items():
        numbers = list(Claim.objects.filter(pk__in=claim_pks).values_list("number", flat=True))
        Claim.objects.filter(pk__in=claim_pks).delete()
        IndexedVector.objects.filter(patent_id=patent_id, claim_number__in=numbers).delete()
        KeywordDocument.objects.filter(patent_id=patent_id).delete()
        patent = Patent.objects.get(pk=patent_id)
        claims = [
            {"number": c.number, "text": c.text, "depends_on": c.depends_on}
            for c in Claim.objects.filter(patent_id=patent_id)
        ]
        Patent.objects.filter(pk=patent_id).update(
            content_hash=content_hash(title=patent.title, abstract=patent.abstract, claims=claims)
        )


class Migration(migrations.Migration):
    dependencies = [
        ("patents", "0006_patent_contributor"),
        ("search", "0003_stored_query"),
    ]

    operations = [migrations.RunPython(placeholder_claims_remove, migrations.RunPython.noop)]
