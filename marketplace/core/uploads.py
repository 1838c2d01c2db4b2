"""Upload caps enforced before and while the body is read, not after it is stored.

Django reads a whole multipart body into temporary files before a view can look at a file's size,
so a cap checked in the service costs the hub the full transfer and disk. Views that take files
refuse an oversized request from its Content-Length before reading a byte, and stop reading
once the files' bytes pass the cap (for a Content-Length that was within the slack, or several files).
"""

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler

from marketplace.core.errors import PayloadTooLarge

# Room for the form's other fields (Django caps those at DATA_UPLOAD_MAX_MEMORY_SIZE) and for the
# multipart boundaries and part headers.
MULTIPART_OVERHEAD = 64 * 1024


class UploadCapHandler(FileUploadHandler):
    """Counts the bytes of every file in the request as they arrive and stops the upload once the
    total passes `max_bytes`: the rest of the body is not read and the partial files are removed.
    Goes first in the request's handlers; passes data on to the next handler unchanged."""

    def __init__(self, request, max_bytes: int):
        super().__init__(request)
        self.max_bytes = max_bytes
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > self.max_bytes:
            for handler in self.request.upload_handlers:
                if handler is not self:
                    handler.upload_interrupted()  # the temporary file handler deletes its file
            raise PayloadTooLarge(
                f"The upload is over the size cap; the limit is {self.max_bytes} bytes.",
                details={"limit": self.max_bytes},
            )
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler builds the file


def upload_cap(request, *, max_bytes: int) -> None:
    """Refuses a request whose declared length cannot fit `max_bytes` of files, and installs the
    streaming cap. Call before anything reads the body (DRF: in the view's `initial`)."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0  # Django reads nothing from a body without a usable length
    fields = settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0
    if declared > max_bytes + fields + MULTIPART_OVERHEAD:
        raise PayloadTooLarge(
            f"The request is {declared} bytes; the limit is {max_bytes} bytes for its files.",
            details={"limit": max_bytes},
        )
    request.upload_handlers.insert(0, UploadCapHandler(request, max_bytes))


# For DRF views that accept files: `upload_limit()` bytes of files at most per request, refused
# from Content-Length before reading and while streaming (413, the API's JSON error). A comment,
# not a docstring: the schema would show a docstring as every such endpoint's description.
class CappedUploadMixin:
    def upload_limit(self) -> int:
        raise NotImplementedError

    def initial(self, request, *args, **kwargs):
        if request.method in ("POST", "PUT", "PATCH"):
            upload_cap(request._request, max_bytes=self.upload_limit())
        super().initial(request, *args, **kwargs)
