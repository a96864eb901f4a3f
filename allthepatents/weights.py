"""Checksums for the model weights this project ships (``models/``).

A shipped model folder holds ``SHA256SUMS`` (``sha256sum`` format, so ``sha256sum -c``
checks it by hand too). Loaders call ``weights_verify`` before reading a local folder that
has one: a damaged or half-copied file fails with the file's name and what to do, instead
of a model that loads and writes nonsense."""

import hashlib
import threading
from pathlib import Path

from allthepatents.files import file_sha256

SUMS_FILE = "SHA256SUMS"

_verified: dict[tuple, bool] = {}
_lock = threading.Lock()


class WeightsDamaged(RuntimeError):
    """A shipped model file is missing or does not match its checksum."""


def weights_checksums_write(folder: Path) -> Path:
    """Writes SHA256SUMS for every file of ``folder`` (itself and dot-files excepted)."""
    folder = Path(folder)
    lines = [
        f"{file_sha256(path)}  {path.relative_to(folder).as_posix()}"
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != SUMS_FILE and not path.name.startswith(".")
    ]
    target = folder / SUMS_FILE
    target.write_text("\n".join(lines) + "\n", encoding="ascii")
    return target


def weights_verify(folder: Path | str) -> bool:
    """Checks ``folder`` against its SHA256SUMS; False when it has none (nothing to check).
    Raises ``WeightsDamaged`` naming the first bad file. Checked once per process and
    state of the files."""
    folder = Path(folder)
    sums = folder / SUMS_FILE
    if not sums.is_file():
        return False
    entries = []
    for number, line in enumerate(sums.read_text(encoding="ascii").splitlines(), start=1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise WeightsDamaged(f"{sums}: line {number} is not '<sha256>  <file>'")
        entries.append((digest, folder / name))
    state = tuple(
        (str(p), p.stat().st_size, p.stat().st_mtime_ns) if p.exists() else (str(p), None, None)
        for _, p in entries
    )
    with _lock:
        if _verified.get(state):
            return True
        for digest, path in entries:
            if not path.is_file():
                raise WeightsDamaged(
                    f"{path} is missing from the shipped model in {folder}: restore it "
                    "(git checkout -- models/, or a fresh clone)"
                )
            actual = file_sha256(path)
            if actual != digest:
                raise WeightsDamaged(
                    f"{path} is damaged: its SHA-256 is {actual[:16]}…, {SUMS_FILE} says "
                    f"{digest[:16]}…; restore it (git checkout -- models/, or a fresh clone)"
                )
        _verified[state] = True
    return True


SHIP_SKIP = ("checkpoint", "checkpoint.tmp", "checkpoints", "runs", "README.md")


def weights_ship(*, source: Path, target: Path, half: bool = True) -> list[Path]:
    """Copies a trained model folder to ``target`` for the repository: checkpoints left
    out, floating-point tensors of ``*.safetensors`` stored as fp16 when ``half`` (loaders
    read them back as fp32), and SHA256SUMS written last. Returns the files written."""
    import shutil

    source, target = Path(source), Path(target)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    written = []
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if relative.parts[0] in SHIP_SKIP or not path.is_file() or path.name == SUMS_FILE:
            continue
        out = target / relative
        out.parent.mkdir(parents=True, exist_ok=True)
        if half and path.suffix == ".safetensors":
            _safetensors_half(path, out)
        else:
            shutil.copy2(path, out)
        written.append(out)
    written.append(weights_checksums_write(target))
    return written


def _safetensors_half(path: Path, out: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    halved = {
        name: t.to(torch.float16).contiguous() if t.is_floating_point() else t
        for name, t in tensors.items()
    }
    save_file(halved, str(out), metadata={"format": "pt"})


_revisions: dict[tuple, str] = {}


def weights_folder_revision(folder: Path | str) -> str:
    """A local model folder's revision for provenance: ``sha256:`` and 16 hex digits of its
    SHA256SUMS, or else of its weight files (names and contents). A hub model has its commit;
    a folder's "main" said nothing about which weights wrote a text."""
    folder = Path(folder)
    sums = folder / SUMS_FILE
    files = (
        [sums]
        if sums.is_file()
        else sorted(
            p
            for pattern in ("*.safetensors", "*.bin", "*.pt")
            for p in folder.glob(pattern)
            if p.is_file()
        )
    )
    if not files:
        return ""
    state = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    with _lock:
        if state not in _revisions:
            digest = hashlib.sha256()
            for path in files:
                digest.update(f"{path.name}\n{file_sha256(path)}\n".encode())
            _revisions[state] = f"sha256:{digest.hexdigest()[:16]}"
        return _revisions[state]
