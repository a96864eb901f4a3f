#!/usr/bin/env python3
"""Checks an All the Patents dump without All the Patents: standard-library Python 3.8+.

    python3 verify_dump.py allthepatents-DATE.jsonl.gz.manifest.json \
        [--heads SAVED_HEADS.json] [--id PUBLIC_ID]

It checks that
  1. both files match the SHA-256 sums in the manifest;
  2. the ledger is one unbroken hash chain from the genesis to the manifest's head;
  3. every invention's text hashes to its content hash, and the ledger holds exactly one
     publication entry for it with that content hash at the publication time it states;
  4. every head in a saved copy (a heads.json archived earlier by you or anyone, or an
     older manifest) is in this chain at the same position;
  5. (with --id) prints that invention's date and hash, the entry that records them, and
     the saved head that proves it existed by then;
  6. (with --follow SITE) that the site's ledger still holds this dump's head at its place
     and chains on from it to the site's head now, every invention published since hashing
     to its entry (the site's /api/ledger, a page at a time).
RFC 3161 timestamp tokens in the heads are checked with `openssl ts -verify` when the
openssl command and the TSA's certificate (--tsa-cert) are at hand.
Exit status 0 when everything holds, 1 with the first problem otherwise.
"""

import argparse
import base64
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request

GENESIS = "0" * 64


class Failed(Exception):
    pass


def _clean(value):
    return unicodedata.normalize("NFC", value or "").strip()


def content_hash(record):
    """The site's canonical form: NFC, stripped, claims by number, sorted keys, compact."""
    payload = {
        "title": _clean(record["title"]),
        "abstract": _clean(record["abstract"]),
        "claims": [
            {
                "number": int(c["number"]),
                "text": _clean(c["text"]),
                "depends_on": c.get("depends_on"),
            }
            for c in sorted(record["claims"], key=lambda c: int(c["number"]))
        ],
    }
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def entry_hash(entry, prev):
    material = "\n".join(
        [prev, entry["kind"], entry["public_id"], entry["content_hash"], entry["recorded_at"]]
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_jsonl_gz(path):
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def saved_heads(path):
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if isinstance(data, dict) and "heads" in data:
        items = data["heads"]
    elif isinstance(data, dict) and "chain_head" in data:
        items = [{"position": data.get("chain_position"), "head": data["chain_head"]}]
    else:
        items = data
    return [h for h in items if h.get("position")]


def verify_token(head, token_b64, tsa_cert):
    """True/False from openssl, or None when it cannot be checked here."""
    openssl = shutil.which("openssl")
    if not openssl or not tsa_cert:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        token = os.path.join(tmp, "token.der")
        with open(token, "wb") as fh:
            fh.write(base64.b64decode(token_b64))
        data = os.path.join(tmp, "head.txt")
        with open(data, "wb") as fh:
            fh.write(head.encode("ascii"))
        result = subprocess.run(  # noqa: S603 (fixed arguments, files we wrote)
            [
                openssl,
                "ts",
                "-verify",
                "-token_in",
                "-in",
                token,
                "-data",
                data,
                "-CAfile",
                tsa_cert,
            ],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0


class _Records:
    """The dump's inventions as the ledger meets their publication entries. A dump written
    in ledger order ("order": "ledger" in its manifest) is read alongside the ledger, one
    record ahead, so memory does not grow with it; an older dump (in publication-time order)
    is read whole into memory first."""

    def __init__(self, path, in_ledger_order):
        self.count = 0
        self._stream = read_jsonl_gz(path) if in_ledger_order else None
        self._ahead = None
        self._waiting = {}
        if in_ledger_order:
            self._ahead = self._next()
        else:
            for record in read_jsonl_gz(path):
                self._checked(record)
                self._waiting[record["public_id"]] = record

    def _checked(self, record):
        self.count += 1
        return _record_checked(record)

    def _next(self):
        record = next(self._stream, None)
        return None if record is None else self._checked(record)

    def take(self, public_id):
        """The record of ``public_id`` if it is the one published here, else None."""
        if self._stream is None:
            return self._waiting.pop(public_id, None)
        if self._ahead is None or self._ahead["public_id"] != public_id:
            return None
        record, self._ahead = self._ahead, self._next()
        return record

    def left(self):
        """A record no publication entry met: the first, or None."""
        if self._stream is None:
            return next(iter(self._waiting.values()), None)
        return self._ahead


def _record_checked(record):
    if content_hash(record) != record["content_hash"]:
        raise Failed(f"{record['public_id']}: the text does not hash to its content hash")
    return record


def _record_matches(record, entry):
    """An invention's record against its publication entry: the same id, text and time."""
    pid = entry["public_id"]
    if record["public_id"] != pid or entry["content_hash"] != record["content_hash"]:
        raise Failed(f"{pid}: content differs from the one the ledger recorded")
    if entry["recorded_at"] != record["published_at"]:
        raise Failed(
            f"{pid}: publication time {record['published_at']} is not the one the "
            f"ledger recorded ({entry['recorded_at']})"
        )


def _digest(public_id):
    # Python's own string hash: 64 bits, and the same for an id throughout one run.
    return hash(public_id)


def _published_twice(ledger, suspects):
    """Which of the public ids whose digests came twice really were published twice (two
    ids may share a digest): a second pass over the ledger, keeping only those ids."""
    seen = set()
    for entry in read_jsonl_gz(ledger):
        if entry["kind"] == "publish" and _digest(entry["public_id"]) in suspects:
            if entry["public_id"] in seen:
                return entry["public_id"]
            seen.add(entry["public_id"])
    return None


def verify(
    manifest_path, heads_path=None, public_id=None, tsa_cert=None, out=print, follow_site=None
):
    folder = os.path.dirname(os.path.abspath(manifest_path))
    with open(manifest_path, encoding="utf-8") as fh:
        manifest = json.load(fh)
    dump = os.path.join(folder, manifest["file"])
    ledger = os.path.join(folder, manifest["ledger_file"])
    for path, key in ((dump, "sha256"), (ledger, "ledger_sha256")):
        if sha256_file(path) != manifest[key]:
            raise Failed(f"{os.path.basename(path)} does not match the manifest's SHA-256")
    out("files match the manifest")
    heads = saved_heads(heads_path) if heads_path else []
    head_positions = {int(h["position"]) for h in heads}

    # One pass over the ledger, the inventions met as their publication entries come: what
    # is kept is the saved heads' entries and a 64-bit digest a publication (for the
    # check that none is published twice), not the chain.
    records = _Records(dump, manifest.get("order") == "ledger")
    prev, position = GENESIS, 0
    at_heads, digests, suspects, wanted = {}, set(), set(), None
    for entry in read_jsonl_gz(ledger):
        position += 1
        if entry.get("position") != position or entry["prev_hash"] != prev:
            raise Failed(f"ledger broken at position {position}: an entry removed or reordered")
        if entry_hash(entry, prev) != entry["entry_hash"]:
            raise Failed(f"ledger entry at position {position} does not match its hash")
        if position in head_positions:
            at_heads[position] = entry["entry_hash"]
        if entry["kind"] == "publish":
            pid = entry["public_id"]
            digest = _digest(pid)
            if digest in digests:
                suspects.add(digest)
            digests.add(digest)
            record = records.take(pid)
            if record is not None:
                _record_matches(record, entry)
                if pid == public_id:
                    wanted = (record, position, entry["entry_hash"])
        prev = entry["entry_hash"]
    if prev != manifest["chain_head"] or position != manifest["chain_position"]:
        raise Failed("the ledger does not end at the manifest's chain head")
    twice = _published_twice(ledger, suspects) if suspects else None
    if twice:
        raise Failed(f"{twice} is published twice in the ledger")
    out(f"ledger: {position} entries chain from the genesis to head {prev}")
    unmet = records.left()
    if unmet is not None:
        where = " (in the ledger's order)" if manifest.get("order") == "ledger" else ""
        raise Failed(f"{unmet['public_id']}: no publication entry in the ledger{where}")
    if records.count != manifest["count"]:
        raise Failed(
            f"the dump holds {records.count} inventions, the manifest says {manifest['count']}"
        )
    out(f"inventions: {records.count} texts match their hashes and their ledger entries")
    if follow_site:
        # Saved heads newer than the dump are met on the site's entries since it.
        later = {p for p in head_positions if p > position}
        at_heads.update(follow(follow_site, manifest, ledger, digests, out=out, positions=later))

    for head in heads:
        at = at_heads.get(int(head["position"]))
        if at is None:
            raise Failed(
                f"saved head at position {head['position']} is beyond this chain's {position} "
                "entries: the chain was cut short"
            )
        if at != head["head"]:
            raise Failed(f"saved head at position {head['position']} is not in this chain")
        token = (head.get("timestamp") or {}).get("token")
        if token:
            ok = verify_token(head["head"], token, tsa_cert)
            if ok is False:
                raise Failed(f"timestamp token of the head at position {head['position']} fails")
            out(
                f"head {head.get('date', '')} position {head['position']}: timestamp "
                + ("verified by openssl" if ok else "not checked (needs openssl and --tsa-cert)")
            )
    if heads:
        out(f"saved heads: all {len(heads)} are in the chain at their positions")

    if public_id:
        if wanted is None:
            raise Failed(f"{public_id} is not in this dump")
        record, at, at_hash = wanted
        out(f"\n{public_id}: “{record['title']}”")
        out(f"  published   {record['published_at']}")
        out(f"  SHA-256     {record['content_hash']}")
        out(f"  ledger      position {at}, entry hash {at_hash}")
        covering = sorted(
            (h for h in heads if int(h["position"]) >= at), key=lambda h: int(h["position"])
        )
        if covering:
            h = covering[0]
            out(
                f"  proved by   the saved head of {h.get('date', '?')} at position "
                f"{h['position']} ({h['head']})"
            )
        else:
            out("  proved by   no saved head yet covers it (pass --heads with a later copy)")
    return True


# A site that asks a client to slow down (429, or 503 while busy) says for how long; the
# waits are bounded, and so is their number, so a site cannot stall the check for ever.
WAIT_MAX_SECONDS = 300
WAITS_MAX = 100


def _get_json(url):
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise Failed(f"{url}: not an http(s) address")
    request = urllib.request.Request(  # noqa: S310 (the scheme is checked above)
        url, headers={"Accept": "application/json", "User-Agent": "verify_dump.py"}
    )
    for _ in range(WAITS_MAX):
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                return json.load(response)
        except urllib.error.HTTPError as exc:
            if exc.code not in (429, 503):
                raise
            after = (exc.headers.get("Retry-After") or "").strip()
            wait = min(int(after) if after.isdigit() else 5, WAIT_MAX_SECONDS)
            print(f"the site asks to wait {wait} s ({exc.code})", file=sys.stderr)
            time.sleep(max(wait, 1))
    raise Failed(f"{url}: the site kept asking to wait")


def follow(site, manifest, ledger, digests, out=print, positions=(), limit=1000):
    """Checks the site's ledger now against the dump: the dump's head is still its entry at
    the same id, and every entry after it chains on, each invention published since
    hashing to its entry (withdrawn ones are null there: their withdrawal is an entry too).
    ``digests``: those of the ids the dump's ledger publishes, for the check that none is
    published again. Returns the entry hashes at the chain ``positions`` asked for (saved
    heads newer than the dump), by position."""
    if "chain_head_entry" not in manifest:
        raise Failed(
            "this dump's manifest does not say its head's entry id: follow from a newer dump"
        )
    head_id, prev = int(manifest["chain_head_entry"]), manifest["chain_head"]
    # From the head's own entry, to see that it is still there (ids may skip, never move).
    after = max(head_id - 1, 0)
    url = urllib.parse.urljoin(site.rstrip("/") + "/", f"api/ledger?after={after}&limit={limit}")
    at_head = head_id == 0
    new_ids, again, at_positions = set(), set(), {}
    position = int(manifest["chain_position"])
    counts = {"publish": 0, "withdraw": 0}
    while url:
        page = _get_json(url)
        for entry in page["entries"]:
            if not at_head:
                if entry["id"] != head_id or entry["entry_hash"] != prev:
                    break
                at_head = True
                continue
            if entry["prev_hash"] != prev:
                raise Failed(
                    f"the site's entry {entry['id']} does not chain on from the one before"
                )
            if entry_hash(entry, prev) != entry["entry_hash"]:
                raise Failed(f"the site's entry {entry['id']} does not match its hash")
            prev = entry["entry_hash"]
            position += 1
            if position in positions:
                at_positions[position] = prev
            counts[entry["kind"]] = counts.get(entry["kind"], 0) + 1
            if entry["kind"] == "publish":
                pid = entry["public_id"]
                if pid in new_ids:
                    raise Failed(f"{pid} is published twice in the site's ledger")
                new_ids.add(pid)
                if _digest(pid) in digests:
                    again.add(pid)
                if entry.get("invention") is not None:
                    _record_matches(_record_checked(entry["invention"]), entry)
        if not at_head:
            raise Failed(
                f"the site's ledger no longer holds this dump's head (entry {head_id}, {prev}): "
                "its history was rewritten"
            )
        if page.get("next") and not page["entries"]:
            raise Failed(f"{url}: a page of no entries that claims a next one")
        url = urllib.parse.urljoin(url, page["next"]) if page.get("next") else None
    if again:
        for entry in read_jsonl_gz(ledger):
            if entry["kind"] == "publish" and entry["public_id"] in again:
                raise Failed(f"{entry['public_id']} is published twice in the site's ledger")
    out(
        f"site: {sum(counts.values())} entries since this dump ({counts['publish']} "
        f"publications, {counts['withdraw']} withdrawals) chain on from its head to {prev}"
    )
    return at_positions


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest")
    parser.add_argument("--heads", help="a heads.json (or manifest) saved earlier")
    parser.add_argument("--id", dest="public_id", help="an invention's public id")
    parser.add_argument("--tsa-cert", help="the time-stamping authority's certificate (PEM)")
    parser.add_argument(
        "--follow", metavar="SITE", help="the site (https://…): check its ledger since the dump"
    )
    args = parser.parse_args(argv)
    try:
        verify(args.manifest, args.heads, args.public_id, args.tsa_cert, follow_site=args.follow)
    except (Failed, OSError, ValueError, KeyError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
