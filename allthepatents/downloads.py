"""Files of any size sent to a visitor without holding a web worker hostage or losing it,
resumable where the line broke (byte ranges, RFC 9110)."""

import fcntl
import mimetypes
import os
import re
from pathlib import Path

from django.conf import settings
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.utils.cache import get_conditional_response
from django.utils.http import content_disposition_header, http_date, parse_http_date_safe

from allthepatents.webworker import web_worker_alive

CHUNK_BYTES = 256 * 1024
# A file this large may take minutes to send on a slow line, holding a web worker all that
# time: it waits for a free slot (DOWNLOADS_MAX_STREAMS).
SLOT_BYTES = 16 * 1024 * 1024


class _Chunks:
    """A file read a chunk at a time, the worker's heartbeat after each chunk sent (see
    allthepatents/webworker.py); closed with the response, sent whole or not, and its
    slot given back with it."""

    def __init__(self, fh, slot: int | None, length: int):
        self.fh, self.slot, self.left = fh, slot, length

    def __iter__(self):
        while self.left > 0 and (block := self.fh.read(min(CHUNK_BYTES, self.left))):
            self.left -= len(block)
            yield block
            web_worker_alive()

    def close(self):
        self.fh.close()
        if self.slot is not None:
            os.close(self.slot)  # the lock goes with the descriptor
            self.slot = None


def _slot_take() -> int | None:
    """A descriptor holding one of DOWNLOADS_MAX_STREAMS file locks, shared by every web
    process of the machine; None when all are held. The kernel frees a lock whose process
    died, so a killed worker cannot leak its slot."""
    folder = settings.DATA_DIR / "locks"
    folder.mkdir(mode=0o700, exist_ok=True)
    for k in range(settings.DOWNLOADS_MAX_STREAMS):
        fd = os.open(folder / f"download-{k}", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            os.close(fd)
    return None


def _content_type(name: str) -> str:
    kind, encoding = mimetypes.guess_type(name)
    if encoding == "gzip":
        return "application/gzip"
    return kind or "application/octet-stream"


# One range of bytes; a request for several is answered with the whole file, as RFC 9110
# allows. Nineteen digits at most: a position past any file, never a number too long to read.
RANGE_RE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")
UNSATISFIABLE = (-1, -1)


def _range_wanted(request, *, size: int, etag: str, modified: int) -> tuple[int, int] | None:
    """The bytes [start, stop) that the request's Range header asks for; None for the whole
    file (no header, one it cannot read, or an If-Range naming another version of it);
    UNSATISFIABLE for a range that starts past the end."""
    header = request.META.get("HTTP_RANGE", "")
    if not header or request.method != "GET":
        return None
    if_range = request.META.get("HTTP_IF_RANGE", "").strip()
    if if_range and if_range != etag and parse_http_date_safe(if_range) != modified:
        return None
    match = RANGE_RE.fullmatch(header.replace(" ", ""))
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if not first:  # the last ``last`` bytes
        return (max(0, size - int(last)), size) if int(last) else UNSATISFIABLE
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return UNSATISFIABLE
    return start, min(int(last) + 1, size) if last else size


def file_download_response(request, path: Path, *, name: str, accel_path: str = ""):
    """The file as an attachment. With DOWNLOADS_ACCEL_REDIRECT (a site behind nginx),
    nginx sends it (``accel_path`` under that prefix: ranges, resumption, no Python process
    held); else it streams from here, beating for the worker as it goes, a large file only
    in a free slot (a 503 with Retry-After otherwise), so that downloads never hold every
    web worker. Either way a broken download resumes: a Range (with If-Range naming this
    version) gets the rest, a 206. A file gone between the listing and the request (a dump
    pruned) is a 404."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed with the response)
    except (FileNotFoundError, IsADirectoryError):
        raise Http404("no such file") from None
    disposition = content_disposition_header(True, name)
    if settings.DOWNLOADS_ACCEL_REDIRECT and accel_path:
        fh.close()
        response = HttpResponse(content_type=_content_type(name))
        response["X-Accel-Redirect"] = settings.DOWNLOADS_ACCEL_REDIRECT + accel_path
        response["Content-Disposition"] = disposition
        return response
    stat = os.fstat(fh.fileno())
    size, modified = stat.st_size, int(stat.st_mtime)
    # Dumps are written whole under a new name, never rewritten in place; still, a file
    # replaced under the same name changes its inode or time and with them this tag.
    etag = f'"{stat.st_ino:x}-{size:x}-{stat.st_mtime_ns:x}"'
    validators = {"ETag": etag, "Last-Modified": http_date(modified), "Accept-Ranges": "bytes"}
    not_modified = get_conditional_response(request, etag=etag, last_modified=modified)
    if not_modified is not None:  # a 304 or a 412, before any slot is taken
        fh.close()
        return _headed(not_modified, validators)
    wanted = _range_wanted(request, size=size, etag=etag, modified=modified)
    if wanted == UNSATISFIABLE:
        fh.close()
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        return _headed(response, validators)
    start, stop = wanted or (0, size)
    if request.method == "HEAD":
        fh.close()
        response = HttpResponse(content_type=_content_type(name))
        response["Content-Length"] = str(size)
        response["Content-Disposition"] = disposition
        return _headed(response, validators)
    slot = None
    if stop - start >= SLOT_BYTES and settings.DOWNLOADS_MAX_STREAMS:
        slot = _slot_take()
        if slot is None:
            fh.close()
            response = HttpResponse(
                "Every slot for large downloads is taken; try again in a minute.\n",
                content_type="text/plain; charset=utf-8",
                status=503,
            )
            response["Retry-After"] = "60"
            return response
    fh.seek(start)
    response = StreamingHttpResponse(
        _Chunks(fh, slot, stop - start),
        content_type=_content_type(name),
        status=206 if wanted else 200,
    )
    response["Content-Length"] = str(stop - start)
    if wanted:
        response["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    response["Content-Disposition"] = disposition
    return _headed(response, validators)


def _headed(response, headers: dict):
    for key, value in headers.items():
        response[key] = value
    return response
