"""Files of any size sent to a visitor without holding a web worker hostage or losing it."""

import fcntl
import mimetypes
import os
from pathlib import Path

from django.conf import settings
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.utils.http import content_disposition_header

from allthepatents.webworker import web_worker_alive

CHUNK_BYTES = 256 * 1024
# A file this large may take minutes to send on a slow line, holding a web worker all that
# time: it waits for a free slot (DOWNLOADS_MAX_STREAMS).
SLOT_BYTES = 16 * 1024 * 1024


class _Chunks:
    """A file read a chunk at a time, the worker's heartbeat after each chunk sent (see
    allthepatents/webworker.py); closed with the response, sent whole or not, and its
    slot given back with it."""

    def __init__(self, fh, slot: int | None):
        self.fh, self.slot = fh, slot

    def __iter__(self):
        while block := self.fh.read(CHUNK_BYTES):
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


def file_download_response(path: Path, *, name: str, accel_path: str = ""):
    """The file as an attachment. With DOWNLOADS_ACCEL_REDIRECT (a site behind nginx),
    nginx sends it (``accel_path`` under that prefix: ranges, resumption, no Python process
    held); else it streams from here, beating for the worker as it goes, a large file only
    in a free slot (a 503 with Retry-After otherwise), so that downloads never hold every
    web worker. A file gone between the listing and the request (a dump pruned) is a 404."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed with the response)
    except (FileNotFoundError, IsADirectoryError):
        raise Http404("no such file") from None
    disposition = content_disposition_header(True, name)
    if settings.DOWNLOADS_ACCEL_REDIRECT and accel_path:
        fh.close()
        response = HttpResponse(content_type=_content_type(name))
        response["X-Accel-Redirect"] = settings.DOWNLOADS_ACCEL_REDIRECT + accel_path
    else:
        size = os.fstat(fh.fileno()).st_size
        slot = None
        if size >= SLOT_BYTES and settings.DOWNLOADS_MAX_STREAMS:
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
        response = StreamingHttpResponse(_Chunks(fh, slot), content_type=_content_type(name))
        response["Content-Length"] = str(size)
    response["Content-Disposition"] = disposition
    return response
