"""The publication date nobody can move: each tampering an attacker with write access
to the database (or to a dump) could try is caught by `ledger verify` and by the standalone
verifier shipped with every dump; trusted timestamps from a local RFC 3161 TSA."""

import datetime as dt
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from allthepatents.kept import kept_clear
from patents.dumps import dump_export
from patents.ledger import (
    ledger_days_counted,
    ledger_days_kept,
    ledger_heads_document,
    ledger_heads_parse,
    ledger_timestamp_heads,
    ledger_verify,
)
from patents.models import LedgerEntry, LedgerTimestamp, Patent
from patents.services import patent_withdraw
from tests.factories import patent_published
from tests.helpers import require, wait_for


def _publish(n=4, *, days_ago=0):
    base = timezone.now() - dt.timedelta(days=days_ago)
    return [
        patent_published(n=100 * days_ago + i, published_at=base + dt.timedelta(seconds=i))
        for i in range(n)
    ]


def _sql(statement, params=()):
    with connection.cursor() as cursor:  # behind the app's back, as an attacker would
        cursor.execute(statement, params)


def _problem(**kwargs):
    checked, problem = ledger_verify(**kwargs)
    assert problem is not None, "the tampering went unnoticed"
    return problem


@pytest.mark.django_db
def test_an_untouched_ledger_verifies_in_both_directions():
    patents = _publish(4)
    patent_withdraw(patent=patents[1], reason="test")
    checked, problem = ledger_verify()
    assert problem is None and checked == 5


@pytest.mark.django_db
def test_a_moved_publication_date_is_caught():
    target = _publish(3)[1]
    _sql(
        "UPDATE patents_patent SET published_at = %s WHERE id = %s",
        ["2019-01-01 00:00:00", target.pk],
    )
    problem = _problem()
    assert problem.public_id == target.public_id and "publication time shown" in problem.why


@pytest.mark.django_db
def test_a_moved_withdrawal_date_is_caught():
    target = _publish(2)[0]
    patent_withdraw(patent=target, reason="test")
    _sql(
        "UPDATE patents_patent SET withdrawn_at = %s WHERE id = %s",
        ["2019-01-01 00:00:00", target.pk],
    )
    assert "withdrawal time shown" in _problem().why


@pytest.mark.django_db
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE patents_patent SET title = 'Changed' WHERE id = %s",
        "UPDATE patents_patent SET abstract = 'Changed.' WHERE id = %s",
        "UPDATE patents_claim SET text = 'Changed.' WHERE patent_id = %s AND number = 1",
        "DELETE FROM patents_claim WHERE patent_id = %s AND number = 2",
    ],
    ids=["title", "abstract", "claim", "claim deleted"],
)
def test_changed_text_is_caught(statement):
    target = _publish(3)[2]
    _sql(statement, [target.pk])
    problem = _problem()
    assert problem.public_id == target.public_id and "content changed" in problem.why


@pytest.mark.django_db
def test_deleting_the_newest_entry_is_caught():
    patents = _publish(3)
    _sql(
        "DELETE FROM patents_ledgerentry WHERE id = %s", [LedgerEntry.objects.order_by("-id")[0].pk]
    )
    problem = _problem()
    assert problem.public_id == patents[-1].public_id and "no ledger entry" in problem.why
    with pytest.raises(CommandError, match="published but has no ledger entry"):
        call_command("ledger", "verify", "--no-progress")


@pytest.mark.django_db
def test_deleting_a_middle_entry_is_caught():
    _publish(4)
    middle = LedgerEntry.objects.order_by("id")[1]
    _sql("DELETE FROM patents_ledgerentry WHERE id = %s", [middle.pk])
    assert "link broken" in _problem().why


@pytest.mark.django_db
def test_reordered_entries_are_caught():
    _publish(3)
    a, b = LedgerEntry.objects.order_by("id")[:2]
    # Swap the two rows' ids, keeping their contents: the walk meets them out of order.
    _sql("UPDATE patents_ledgerentry SET id = -1 WHERE id = %s", [a.pk])
    _sql("UPDATE patents_ledgerentry SET id = %s WHERE id = %s", [a.pk, b.pk])
    _sql("UPDATE patents_ledgerentry SET id = %s WHERE id = -1", [b.pk])
    assert "link broken" in _problem().why


@pytest.mark.django_db
def test_a_truncated_and_rewritten_chain_is_caught_by_saved_heads(tmp_path):
    """Delete the newest entry and its patent: nothing inside the database betrays it. A
    heads.json saved by a third party the day before does."""
    patents = _publish(3)
    saved = tmp_path / "heads.json"
    saved.write_text(json.dumps(ledger_heads_document()))
    newest = LedgerEntry.objects.order_by("-id")[0]
    _sql("DELETE FROM patents_ledgerentry WHERE id = %s", [newest.pk])
    _sql("DELETE FROM patents_claim WHERE patent_id = %s", [patents[-1].pk])
    _sql("DELETE FROM patents_minhashband WHERE patent_id = %s", [patents[-1].pk])
    _sql("DELETE FROM patents_patent WHERE id = %s", [patents[-1].pk])
    # The day's count the public heads are read from, mended to match.
    _sql(
        "UPDATE patents_ledgerday SET count = count - 1, last_id = %s WHERE last_id = %s",
        [LedgerEntry.objects.order_by("-id")[0].pk, newest.pk],
    )
    assert ledger_verify()[1] is None  # consistent inside: only the outside copy knows
    heads = ledger_heads_parse(json.loads(saved.read_text()))
    assert "cut short" in _problem(heads=heads).why
    with pytest.raises(CommandError, match="cut short"):
        call_command("ledger", "verify", "--no-progress", "--heads", str(saved))


@pytest.mark.django_db
def test_the_days_the_public_heads_are_read_from_are_checked_and_counted_again(client):
    """/ledger/ and heads.json read each day's count from a row the appends keep. A row
    edited behind the app's back moves every later head's position: `ledger verify` names
    the day, and `ledger days` counts the entries again."""
    _publish(2, days_ago=1)
    _publish(3)
    positions = [h["position"] for h in client.get("/ledger/heads.json").json()["heads"]]
    assert positions == [5, 2]
    yesterday = (timezone.now() - dt.timedelta(days=1)).astimezone(dt.UTC).date()
    _sql("UPDATE patents_ledgerday SET count = 3 WHERE day = %s", [yesterday])
    problem = _problem()
    assert str(yesterday) in problem.why and "(3 entries" in problem.why, problem
    assert str(problem) == problem.why  # no entry or invention to name
    with pytest.raises(CommandError, match="ledger days"):
        call_command("ledger", "verify", "--no-progress")
    call_command("ledger", "days")
    assert ledger_verify() == (5, None)
    kept_clear()
    positions = [h["position"] for h in client.get("/ledger/heads.json").json()["heads"]]
    assert positions == [5, 2]


@pytest.mark.django_db
def test_days_of_entries_recorded_before_they_were_kept_are_filled_in():
    """A site that published before the days were kept gets them from its entries when it
    migrates."""
    import importlib

    from django.apps import apps

    from patents.models import LedgerDay

    fill = importlib.import_module("patents.migrations.0012_ledger_days").ledger_days_fill
    _publish(2, days_ago=3)
    _publish(1)
    kept = ledger_days_kept()
    LedgerDay.objects.all().delete()
    fill(apps, connection.schema_editor())
    assert ledger_days_kept() == kept == ledger_days_counted()
    assert [d["count"] for d in kept] == [2, 1]


@pytest.mark.django_db
def test_a_saved_head_missing_from_the_chain_is_caught(tmp_path):
    _publish(3)
    document = ledger_heads_document()
    document["heads"][0]["head"] = "f" * 64
    saved = tmp_path / "heads.json"
    saved.write_text(json.dumps(document))
    with pytest.raises(CommandError, match="a saved head says position 3 holds another entry"):
        call_command("ledger", "verify", "--no-progress", "--heads", str(saved))
    document["heads"][0]["head"] = LedgerEntry.objects.order_by("-id")[0].entry_hash
    saved.write_text(json.dumps(document))
    call_command("ledger", "verify", "--no-progress", "--heads", str(saved))


@pytest.mark.django_db
def test_heads_json_lists_positions_and_the_feed_carries_the_head(client):
    _publish(2, days_ago=1)
    _publish(3)
    data = client.get("/ledger/heads.json").json()
    assert data["format"] == "allthepatents-ledger-heads/1"
    assert [h["position"] for h in data["heads"]] == [5, 2]
    newest = LedgerEntry.objects.order_by("-id")[0]
    assert data["heads"][0]["head"] == newest.entry_hash
    feed = client.get("/feed.atom").content.decode()
    assert newest.entry_hash in feed and "position 5" in feed


@pytest.mark.django_db
def test_daily_heads_cut_days_at_utc_midnight():
    from patents.ledger import ledger_daily_heads

    midnight = dt.datetime(2026, 5, 6, tzinfo=dt.UTC)
    times = [midnight - dt.timedelta(microseconds=1), midnight, midnight + dt.timedelta(hours=23)]
    for n, when in enumerate(times):
        patent_published(n=n, published_at=when)
    heads = ledger_daily_heads()
    assert [(h["date"], h["count"], h["position"]) for h in heads] == [
        (dt.date(2026, 5, 6), 2, 3),
        (dt.date(2026, 5, 5), 1, 1),
    ]
    assert heads[0]["head"] == LedgerEntry.objects.order_by("-id")[0].entry_hash


# --- the standalone verifier on a dump ------------------------------------------------------


def _verifier(folder, *args):
    """verify_dump.py as a patent attorney runs it: a bare interpreter, no site-packages,
    from the dump folder (so only the standard library is importable)."""
    return subprocess.run(
        [sys.executable, "-I", "-S", "verify_dump.py", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _dump(tmp_path):
    manifest = dump_export(out_dir=tmp_path)
    return tmp_path / f"{manifest['file']}.manifest.json", manifest


def _rewrite(tmp_path, manifest, name, change):
    """Tampers with a dump file and re-signs the manifest, as a forger would."""
    path = tmp_path / manifest[name]
    with gzip.open(path, "rt") as fh:
        rows = [json.loads(line) for line in fh]
    rows = change(rows)
    with gzip.open(path, "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest["sha256" if name == "file" else "ledger_sha256"] = digest
    if name == "ledger_file":
        manifest["chain_head"] = rows[-1]["entry_hash"]
        manifest["chain_position"] = len(rows)
    (tmp_path / f"{manifest['file']}.manifest.json").write_text(json.dumps(manifest))


@pytest.mark.django_db
def test_the_standalone_verifier_checks_one_invention_against_a_saved_head(tmp_path):
    patents = _publish(3)
    saved = tmp_path / "heads-archived.json"
    saved.write_text(json.dumps(ledger_heads_document()))
    manifest_path, _ = _dump(tmp_path / "dump")
    target = patents[1]
    result = _verifier(
        manifest_path.parent, manifest_path.name, "--heads", str(saved), "--id", target.public_id
    )
    assert result.returncode == 0, result.stderr
    assert target.content_hash in result.stdout
    assert target.published_at.astimezone(dt.UTC).isoformat() in result.stdout
    assert "proved by   the saved head" in result.stdout and result.stdout.strip().endswith("OK")


def _shift_date(rows):
    rows[0]["published_at"] = "2019-01-01T00:00:00+00:00"
    return rows


def _change_claim(rows):
    rows[0]["claims"][0]["text"] = "Something else."
    return rows


def _change_claim_and_hash(rows):
    rows = _change_claim(rows)
    from patents.text import content_hash

    rows[0]["content_hash"] = content_hash(
        **{k: rows[0][k] for k in ("title", "abstract", "claims")}
    )
    return rows


def _rechain(rows):
    """Recomputes positions and hashes after an edit, as a careful forger would."""
    prev = "0" * 64
    for position, row in enumerate(rows, start=1):
        row["position"], row["prev_hash"] = position, prev
        material = "\n".join(
            [prev, row["kind"], row["public_id"], row["content_hash"], row["recorded_at"]]
        )
        row["entry_hash"] = prev = hashlib.sha256(material.encode()).hexdigest()
    return rows


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name,change,expected",
    [
        ("file", _shift_date, "is not the one the ledger recorded"),
        ("file", _change_claim, "does not hash to its content hash"),
        ("file", _change_claim_and_hash, "content differs from the one the ledger recorded"),
        ("ledger_file", lambda rows: rows[:-1], "no publication entry"),
        ("ledger_file", lambda rows: rows[:1] + rows[2:], "ledger broken at position 2"),
        ("ledger_file", lambda rows: [rows[1], rows[0], *rows[2:]], "ledger broken at position 1"),
        ("ledger_file", lambda rows: _rechain(rows[:-1]), "cut short"),
    ],
    ids=[
        "date",
        "text",
        "text and hash",
        "newest entry deleted",
        "middle entry deleted",
        "reordered",
        "rechained shorter",
    ],
)
def test_the_standalone_verifier_catches_tampering(tmp_path, name, change, expected):
    _publish(3)
    saved = tmp_path / "heads.json"
    saved.write_text(json.dumps(ledger_heads_document()))
    manifest_path, manifest = _dump(tmp_path / "dump")
    assert (
        _verifier(manifest_path.parent, manifest_path.name, "--heads", str(saved)).returncode == 0
    )
    if name == "ledger_file" and expected == "cut short":
        # A forger who drops the newest invention everywhere and re-chains.
        _rewrite(tmp_path / "dump", manifest, "file", lambda rows: rows[:-1])
        manifest["count"] -= 1
    _rewrite(tmp_path / "dump", manifest, name, change)
    result = _verifier(manifest_path.parent, manifest_path.name, "--heads", str(saved))
    assert result.returncode == 1 and expected in result.stderr, result.stderr


def _out_of_time_order():
    """Three inventions whose publication times do not follow their ledger entries (as
    two workers' clocks read before their appends may), and one withdrawn."""
    now = timezone.now()
    patents = [
        patent_published(n=n, published_at=now - dt.timedelta(minutes=m))
        for n, m in ((1, 0), (2, 30), (3, 10), (4, 20))
    ]
    patent_withdraw(patent=patents[3], reason="test")
    return patents[:3]


@pytest.mark.django_db
def test_a_dump_lists_its_inventions_in_ledger_order_and_verifies_them_alongside(tmp_path):
    """The verifier held the whole chain in memory (300 MB at 200,000 entries: 15 GB at
    ten million); it now reads the inventions beside the ledger, which needs them in the
    ledger's order, whatever their publication times say."""
    patents = _out_of_time_order()
    manifest_path, manifest = _dump(tmp_path / "dump")
    assert manifest["order"] == "ledger" and manifest["count"] == 3
    with gzip.open(tmp_path / "dump" / manifest["file"], "rt") as fh:
        listed = [json.loads(line)["public_id"] for line in fh]
    assert listed == [p.public_id for p in patents]
    result = _verifier(manifest_path.parent, manifest_path.name, "--id", patents[2].public_id)
    assert result.returncode == 0, result.stderr
    assert "ledger      position 3," in result.stdout and "inventions: 3 texts" in result.stdout
    # A forger who swaps two inventions (and signs the file again) is caught.
    _rewrite(tmp_path / "dump", manifest, "file", lambda rows: [rows[1], rows[0], rows[2]])
    result = _verifier(manifest_path.parent, manifest_path.name)
    assert result.returncode == 1, result.stdout
    assert f"{patents[0].public_id}: no publication entry in the ledger" in result.stderr


@pytest.mark.django_db
def test_a_dump_written_in_publication_time_order_still_verifies(tmp_path):
    """Dumps written before (no "order" in the manifest, inventions by publication time)
    are checked as they were, in memory."""
    _out_of_time_order()
    manifest_path, manifest = _dump(tmp_path / "dump")
    del manifest["order"]
    _rewrite(
        tmp_path / "dump",
        manifest,
        "file",
        lambda rows: sorted(rows, key=lambda r: r["published_at"]),
    )
    result = _verifier(manifest_path.parent, manifest_path.name)
    assert result.returncode == 0 and "inventions: 3 texts" in result.stdout, result.stderr
    _rewrite(tmp_path / "dump", manifest, "file", lambda rows: rows[:2])
    result = _verifier(manifest_path.parent, manifest_path.name)
    assert result.returncode == 1 and "the dump holds 2 inventions" in result.stderr


@pytest.mark.django_db
def test_a_second_publication_of_one_id_is_caught_and_a_shared_digest_is_not_one(
    tmp_path, monkeypatch
):
    """Each publication leaves a 64-bit digest of its id, not the id: two ids may share one,
    and a second pass tells that from an id published twice."""
    from patents import verify_dump

    _publish(3)
    manifest_path, manifest = _dump(tmp_path / "dump")
    monkeypatch.setattr(verify_dump, "_digest", lambda public_id: 7)  # every id collides
    assert verify_dump.verify(str(manifest_path), out=lambda *a: None) is True

    def republish(rows):
        again = dict(rows[0], recorded_at="2030-01-01T00:00:00.000000+00:00")
        return _rechain([*rows, again])

    _rewrite(tmp_path / "dump", manifest, "ledger_file", republish)
    result = _verifier(manifest_path.parent, manifest_path.name)
    assert result.returncode == 1 and "is published twice in the ledger" in result.stderr


@pytest.mark.django_db
def test_the_verifier_needs_nothing_but_the_standard_library():
    source = (
        __import__("pathlib").Path(__file__).parents[2] / "patents" / "verify_dump.py"
    ).read_text()
    imports = {
        line.split()[1].split(".")[0]
        for line in source.splitlines()
        if line.startswith(("import ", "from "))
    }
    assert imports <= set(sys.stdlib_module_names)


# --- trusted timestamps ------------------------------------------------------------------------


@pytest.fixture
def tsa(settings):
    require(shutil.which("openssl") is not None, "the openssl command is not installed")
    from tests.local_tsa import LocalTSA

    authority = LocalTSA()
    settings.LEDGER_TSA_URL = authority.url
    settings.LEDGER_TSA_CERT = authority.cert
    settings.LEDGER_TSA_TIMEOUT = 5
    yield authority
    authority.close()


@pytest.mark.django_db
def test_daily_heads_get_tokens_that_verify(tsa, client, tmp_path):
    _publish(2, days_ago=2)
    _publish(2, days_ago=1)
    _publish(1)
    result = ledger_timestamp_heads()
    # Two closed days and today's newest entry.
    assert result == {"stamped": 3, "failed": 0} and tsa.requests == 3
    assert ledger_timestamp_heads() == {"stamped": 0, "failed": 0}  # nothing due again
    assert ledger_verify()[1] is None
    heads = client.get("/ledger/heads.json").json()["heads"]
    assert all(h["timestamp"] and h["timestamp"]["token"] for h in heads)
    # The token proves the head from outside too: openssl checks it against the TSA's cert.
    saved = tmp_path / "heads.json"
    saved.write_text(json.dumps({"heads": heads}))
    manifest_path, _ = _dump(tmp_path / "dump")
    result = _verifier(
        manifest_path.parent, manifest_path.name, "--heads", str(saved), "--tsa-cert", str(tsa.cert)
    )
    assert result.returncode == 0 and result.stdout.count("verified by openssl") == 3, result.stdout


@pytest.mark.django_db
def test_a_changed_head_or_a_forged_token_fails(tsa):
    _publish(2, days_ago=1)
    ledger_timestamp_heads()
    stamp = LedgerTimestamp.objects.get()
    # A forged token: the real one with its signature bytes altered.
    token = bytearray(bytes(stamp.token))
    token[-10] ^= 0xFF
    LedgerTimestamp.objects.filter(pk=stamp.pk).update(token=bytes(token))
    assert "timestamp token does not verify" in _problem().why
    # A token for another head.
    LedgerTimestamp.objects.filter(pk=stamp.pk).update(entry=LedgerEntry.objects.order_by("id")[0])
    problem = _problem()
    assert "timestamp token does not verify" in problem.why


@pytest.mark.django_db
def test_an_unreachable_tsa_leaves_publishing_working_and_retries(tsa, settings):
    tsa.down = True
    _publish(2, days_ago=1)
    patent = patent_published(n=77)  # publishing does not wait on the TSA
    assert Patent.objects.filter(pk=patent.pk).exists()
    assert ledger_timestamp_heads() == {"stamped": 0, "failed": 1}
    assert not LedgerTimestamp.objects.exists()
    tsa.down = False
    assert ledger_timestamp_heads()["stamped"] == 2
    settings.LEDGER_TSA_URL = "http://127.0.0.1:1/tsa"  # nobody there
    _publish(1, days_ago=3)  # a closed day's head without a token: due
    with pytest.raises(CommandError, match="did not answer"):
        call_command("ledger", "timestamp")


@pytest.mark.django_db
@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "unpinned"])
def test_a_token_for_other_data_is_refused_pinned_certificate_or_not(tsa, settings, pinned):
    """Without LEDGER_TSA_CERT a reply was not checked at all: a genuine token for other
    data was kept as a head's stamp, and that head never stamped again."""
    if not pinned:
        settings.LEDGER_TSA_CERT = None
    _publish(2, days_ago=1)
    tsa.answer_for = b"some other document"
    assert ledger_timestamp_heads() == {"stamped": 0, "failed": 1}
    assert not LedgerTimestamp.objects.exists()
    tsa.answer_for = None
    assert ledger_timestamp_heads()["stamped"] == 1
    assert ledger_verify()[1] is None  # and ledger verify checks tokens without a pin too


@pytest.mark.django_db(transaction=True)  # the thread reads the rows on its own connection
def test_a_trickling_tsa_is_given_up_within_its_timeout(tsa, settings):
    """A TSA that sends its reply a byte at a time held the only worker for 300 s."""
    settings.LEDGER_TSA_TIMEOUT = 1
    tsa.trickle = 0.3
    _publish(2, days_ago=1)
    outcome = []

    def stamp():
        try:
            outcome.append(ledger_timestamp_heads())
        finally:
            connection.close()

    thread = threading.Thread(target=stamp)
    thread.start()
    thread.join(timeout=15)  # the timeout is 1 s; a reply of some kilobytes takes minutes
    tsa.down = True  # ends the trickle either way
    assert not thread.is_alive(), "the timestamp request outlived its timeout"
    assert outcome == [{"stamped": 0, "failed": 1}]


@pytest.mark.unit
def test_heads_file_formats_are_read():
    assert ledger_heads_parse({"heads": [{"position": 2, "head": "ab"}]}) == {2: "ab"}
    assert ledger_heads_parse({"chain_head": "cd", "chain_position": 7}) == {7: "cd"}
    assert ledger_heads_parse([{"position": 1, "head": "ef"}]) == {1: "ef"}


# --- files --------------------------------------------------------------------------------------


def test_data_files_are_private_whatever_the_umask(tmp_path):
    from tests.helpers import ROOT

    data = tmp_path / "data"
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")},
        "DATA_DIR": str(data),
        "HF_HUB_OFFLINE": "1",
    }
    for command in (
        ["migrate", "-v0"],
        [
            "shell",
            "-c",
            "from allthepatents.celery import app; app.send_task('allthepatents.ping')",
        ],
        ["search_index", "rebuild", "--no-progress"],
    ):
        subprocess.run(
            ["bash", "-c", 'umask 022 && exec "$@"', "-", sys.executable, "manage.py", *command],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=300,
            capture_output=True,
        )
    assert oct(data.stat().st_mode & 0o777) == "0o700"
    private = [
        data / "db.sqlite3",
        data / "secret_key",
        data / "celery-broker.sqlite3",
        *[p for p in (data / "index").iterdir()],
    ]
    assert len(private) >= 5
    for path in private:
        assert oct(path.stat().st_mode & 0o777) in ("0o600", "0o700"), path


@pytest.mark.django_db
def test_heads_hold_their_chain_positions_when_publication_times_cross_midnight_out_of_order(
    tmp_path,
):
    """Two workers publish at midnight: the one whose clock read 23:59:59.9 commits after the
    one that read 00:00:00.1 (its transaction was longer, or its machine's clock behind), so
    the ledger holds the later day's entry first. Passed times stand in for the two workers'
    clocks. A day's head must name the chain position of its own entry, or everyone who
    archived heads.json sees tampering where there is none."""
    midnight = dt.datetime(2026, 5, 6, tzinfo=dt.UTC)
    times = [
        midnight + dt.timedelta(milliseconds=100),
        midnight - dt.timedelta(milliseconds=100),
        midnight + dt.timedelta(hours=1),
    ]
    patents = [patent_published(n=n, published_at=when) for n, when in enumerate(times)]
    entries = list(LedgerEntry.objects.order_by("id"))
    document = ledger_heads_document()
    by_day = {h["date"]: h for h in document["heads"]}
    assert by_day["2026-05-05"]["head"] == entries[1].entry_hash
    assert (by_day["2026-05-05"]["count"], by_day["2026-05-05"]["position"]) == (1, 2)
    assert (by_day["2026-05-06"]["count"], by_day["2026-05-06"]["position"]) == (2, 3)
    saved = tmp_path / "heads.json"
    saved.write_text(json.dumps(document))
    assert ledger_verify(heads=ledger_heads_parse(document)) == (3, None)
    call_command("ledger", "verify", "--no-progress", "--heads", str(saved))
    manifest_path, _ = _dump(tmp_path / "dump")
    result = _verifier(
        manifest_path.parent,
        manifest_path.name,
        "--heads",
        str(saved),
        "--id",
        patents[1].public_id,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.django_db
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_daily_head_is_at_its_chain_position_whatever_the_order_of_times(seed):
    """Publication times drawn at random around four midnights, in any order against the
    chain (clocks of several machines): each head names its day's last entry, at the
    position that entry holds in the chain."""
    import random

    from patents.ledger import ledger_daily_heads

    rng = random.Random(seed)
    midnight = dt.datetime(2026, 5, 6, tzinfo=dt.UTC)
    for n in range(30):
        day = rng.randrange(4)
        offset = dt.timedelta(seconds=rng.uniform(-5, 5))
        patent_published(n=n, published_at=midnight + dt.timedelta(days=day) + offset)
    chain = list(LedgerEntry.objects.order_by("id"))
    position = {e.pk: i for i, e in enumerate(chain, start=1)}
    heads = ledger_daily_heads()
    assert sum(h["count"] for h in heads) == len(chain)
    # The days the appends kept are the entries' own, and so are the heads of a dump (which
    # counts them from the entries).
    assert ledger_days_kept() == ledger_days_counted()
    assert ledger_daily_heads(through=chain[-1].pk) == heads
    for h in heads:
        days_entries = [e for e in chain if e.recorded_at.astimezone(dt.UTC).date() == h["date"]]
        assert h["count"] == len(days_entries)
        assert h["last_entry"] == days_entries[-1].pk
        assert h["position"] == position[h["last_entry"]]
        assert h["head"] == chain[h["position"] - 1].entry_hash
    assert ledger_verify(heads={h["position"]: h["head"] for h in heads}) == (len(chain), None)


@pytest.mark.django_db
def test_a_dump_made_while_inventions_are_published_holds_only_heads_of_its_own_chain(tmp_path):
    """Workers go on publishing while a dump is written (minutes at a million inventions).
    The manifest's daily heads must be those of the chain it holds: a head past its end
    would make the dump fail its own check (`--heads` its manifest, or one saved from it)."""
    _publish(3)
    published = []

    def publish_meanwhile(_n):
        if not published:
            published.append(patent_published(n=99))

    manifest = dump_export(out_dir=tmp_path / "dump", progress=publish_meanwhile)
    assert published and LedgerEntry.objects.count() == 4
    assert manifest["chain_position"] == 3
    assert max(h["position"] for h in manifest["heads"]) == 3
    manifest_path = tmp_path / "dump" / f"{manifest['file']}.manifest.json"
    result = _verifier(manifest_path.parent, manifest_path.name, "--heads", manifest_path.name)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.django_db
def test_a_worker_whose_clock_runs_behind_does_not_date_inventions_before_they_existed(
    monkeypatch,
):
    """On PostgreSQL, workers on several machines publish into one chain: the publication and
    withdrawal times are the database server's. A worker's clock an hour behind (its
    `timezone.now`, patched) must not move either. SQLite is one machine's file: there the
    machine's clock is the only one, and it is the one used."""
    import django.utils.timezone as django_timezone

    real_now = django_timezone.now
    skew = dt.timedelta(hours=1)
    monkeypatch.setattr(django_timezone, "now", lambda: real_now() - skew)
    before = real_now()
    patent = patent_published(n=1)
    patent_withdraw(patent=patent, reason="test")
    after = real_now()
    patent.refresh_from_db()
    if connection.vendor == "postgresql":
        for moment in (patent.published_at, patent.withdrawn_at):
            assert before - dt.timedelta(seconds=5) <= moment <= after + dt.timedelta(seconds=5)
    else:
        for moment in (patent.published_at, patent.withdrawn_at):
            assert before - skew <= moment <= after - skew
    assert ledger_verify() == (2, None)


# --- daily dumps ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_worker_writes_the_days_dump_at_its_first_publication(worker_factory, settings, tmp_path):
    """EXPORT_DAILY: a site that publishes gets its dated dump without anyone running a
    command; the real worker over Redis writes it."""
    dumps = tmp_path / "dumps"
    settings.EXPORT_DAILY, settings.EXPORT_DIR = True, dumps
    worker = worker_factory(EXPORT_DAILY="1", EXPORT_DIR=str(dumps))
    from django.core.cache import cache

    cache.clear()
    patent = patent_published(n=1)
    today = timezone.now().astimezone(dt.UTC).date().isoformat()
    manifest_path = dumps / f"allthepatents-{today}.jsonl.gz.manifest.json"
    wait_for(manifest_path.is_file, timeout=60, message=lambda: worker.log_text()[-4000:])
    manifest = json.loads(manifest_path.read_text())
    assert manifest["count"] == 1 and manifest["chain_position"] == 1
    result = _verifier(dumps, manifest_path.name, "--id", patent.public_id)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.django_db
def test_the_daily_dump_is_enqueued_once_a_day_and_only_when_asked(settings, tmp_path, monkeypatch):
    from django.core.cache import cache

    import allthepatents.celery as celery_app
    from patents.dumps import dump_export, dump_export_soon

    sent = []
    monkeypatch.setattr(celery_app, "task_send", lambda task, **kw: sent.append(task))
    cache.clear()
    settings.EXPORT_DIR = tmp_path / "dumps"
    settings.EXPORT_DAILY = False
    dump_export_soon([1])
    assert sent == []
    settings.EXPORT_DAILY = True
    dump_export_soon([1])
    dump_export_soon([2])  # enqueued already: the task may still be in the queue
    assert sent == ["patents.dump_export_daily"]
    cache.clear()
    dump_export(out_dir=settings.EXPORT_DIR)
    dump_export_soon([3])  # today's is written
    assert sent == ["patents.dump_export_daily"]


@pytest.mark.django_db
def test_the_daily_dump_keeps_the_newest_and_is_not_written_twice(settings, tmp_path, client):
    from patents.dumps import dump_export, dump_export_daily

    settings.EXPORT_DIR = tmp_path / "dumps"
    settings.EXPORT_KEEP = 2
    _publish(2)
    for day in (dt.date(2026, 1, 1), dt.date(2026, 1, 2), dt.date(2026, 1, 3)):
        dump_export(out_dir=settings.EXPORT_DIR, today=day)
    first = dump_export_daily()
    today = timezone.now().astimezone(dt.UTC).date().isoformat()
    assert first["written"] == f"allthepatents-{today}.jsonl.gz"
    assert first["pruned"] == [
        "allthepatents-2026-01-02.jsonl.gz",
        "allthepatents-2026-01-01.jsonl.gz",
    ]
    assert dump_export_daily() == {"written": None, "pruned": []}
    left = sorted(p.name for p in settings.EXPORT_DIR.iterdir())
    assert left == sorted(
        [
            f"allthepatents-{today}.jsonl.gz",
            f"allthepatents-{today}.jsonl.gz.manifest.json",
            f"allthepatents-{today}.ledger.jsonl.gz",
            "allthepatents-2026-01-03.jsonl.gz",
            "allthepatents-2026-01-03.jsonl.gz.manifest.json",
            "allthepatents-2026-01-03.ledger.jsonl.gz",
            "verify_dump.py",
        ]
    )
    page = client.get("/downloads/").content.decode()
    assert "allthepatents-2026-01-03.jsonl.gz" in page and "2026-01-02" not in page


@pytest.mark.django_db
def test_the_verifier_the_downloads_page_links_is_there_before_the_first_dump(
    settings, tmp_path, client
):
    settings.EXPORT_DIR = tmp_path / "no-dumps-yet"
    page = client.get("/downloads/").content.decode()
    assert 'href="/downloads/verify_dump.py"' in page and "No dumps yet" in page
    response = client.get("/downloads/verify_dump.py")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert body == (settings.BASE_DIR / "patents" / "verify_dump.py").read_bytes()
