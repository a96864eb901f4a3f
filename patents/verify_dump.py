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
     the saved head that proves it existed by then.
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
import unicodedata

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


def verify(manifest_path, heads_path=None, public_id=None, tsa_cert=None, out=print):
    folder = os.path.dirname(os.path.abspath(manifest_path))
    with open(manifest_path, encoding="utf-8") as fh:
        manifest = json.load(fh)
    dump = os.path.join(folder, manifest["file"])
    ledger = os.path.join(folder, manifest["ledger_file"])
    for path, key in ((dump, "sha256"), (ledger, "ledger_sha256")):
        if sha256_file(path) != manifest[key]:
            raise Failed(f"{os.path.basename(path)} does not match the manifest's SHA-256")
    out("files match the manifest")

    prev, position = GENESIS, 0
    by_position, publish = {}, {}
    for entry in read_jsonl_gz(ledger):
        position += 1
        if entry.get("position") != position or entry["prev_hash"] != prev:
            raise Failed(f"ledger broken at position {position}: an entry removed or reordered")
        if entry_hash(entry, prev) != entry["entry_hash"]:
            raise Failed(f"ledger entry at position {position} does not match its hash")
        by_position[position] = entry
        if entry["kind"] == "publish":
            if entry["public_id"] in publish:
                raise Failed(f"{entry['public_id']} is published twice in the ledger")
            publish[entry["public_id"]] = position
        prev = entry["entry_hash"]
    if prev != manifest["chain_head"] or position != manifest["chain_position"]:
        raise Failed("the ledger does not end at the manifest's chain head")
    out(f"ledger: {position} entries chain from the genesis to head {prev}")

    wanted = None
    count = 0
    for record in read_jsonl_gz(dump):
        count += 1
        pid = record["public_id"]
        if content_hash(record) != record["content_hash"]:
            raise Failed(f"{pid}: the text does not hash to its content hash")
        at = publish.get(pid)
        if at is None:
            raise Failed(f"{pid}: no publication entry in the ledger")
        entry = by_position[at]
        if entry["content_hash"] != record["content_hash"]:
            raise Failed(f"{pid}: content differs from the one the ledger recorded")
        if entry["recorded_at"] != record["published_at"]:
            raise Failed(
                f"{pid}: publication time {record['published_at']} is not the one the ledger "
                f"recorded ({entry['recorded_at']})"
            )
        if pid == public_id:
            wanted = (record, at)
    if count != manifest["count"]:
        raise Failed(f"the dump holds {count} inventions, the manifest says {manifest['count']}")
    out(f"inventions: {count} texts match their hashes and their ledger entries")

    heads = saved_heads(heads_path) if heads_path else []
    for head in heads:
        entry = by_position.get(int(head["position"]))
        if entry is None:
            raise Failed(
                f"saved head at position {head['position']} is beyond this chain's {position} "
                "entries: the chain was cut short"
            )
        if entry["entry_hash"] != head["head"]:
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
        record, at = wanted
        out(f"\n{public_id}: “{record['title']}”")
        out(f"  published   {record['published_at']}")
        out(f"  SHA-256     {record['content_hash']}")
        out(f"  ledger      position {at}, entry hash {by_position[at]['entry_hash']}")
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest")
    parser.add_argument("--heads", help="a heads.json (or manifest) saved earlier")
    parser.add_argument("--id", dest="public_id", help="an invention's public id")
    parser.add_argument("--tsa-cert", help="the time-stamping authority's certificate (PEM)")
    args = parser.parse_args(argv)
    try:
        verify(args.manifest, args.heads, args.public_id, args.tsa_cert)
    except (Failed, OSError, ValueError, KeyError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
