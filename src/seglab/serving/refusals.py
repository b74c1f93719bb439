"""`Refusal`: a request the service will not do, with its HTTP status, a stable code and what to do about it.

Every 4xx/5xx answer of `seglab serve` is one of these, sent as JSON `{"error": code, "detail": message}`.
"""

from __future__ import annotations

from collections.abc import Mapping

# Every code a refusal may carry, with its HTTP status: the docs' table of errors is this table.
REFUSAL_STATUS: Mapping[str, int] = {
    "empty-body": 400,            # no bytes where an image was expected
    "no-file": 400,               # a multipart form without a file part
    "bad-multipart": 400,         # a multipart body that does not parse
    "not-an-image": 400,          # bytes PIL cannot identify as an image
    "truncated-image": 400,       # an image cut short or corrupt inside its data
    "unknown-format": 406,        # ?format= or Accept names no answer this service gives
    "upload-timeout": 408,        # the body did not arrive within --timeout-s
    "body-too-large": 413,        # more bytes than --max-body-mb
    "too-many-pixels": 413,       # a header declaring more pixels than --max-pixels (a decompression bomb)
    "unsupported-content-type": 415,  # neither an image, application/octet-stream nor multipart/form-data
    "prediction-failed": 500,     # the model raised on this image's batch (the message says what)
    "queue-full": 503,            # --queue images already wait: try again after Retry-After seconds
    "shutting-down": 503,         # the service is finishing its last requests before it stops
    "timeout": 504,               # no answer within --timeout-s of the request's arrival
}


class Refusal(Exception):
    """A request refused with `status` (from `REFUSAL_STATUS[code]`), `detail` saying what is wrong and what to
    do, and extra response `headers` (e.g. Retry-After)."""

    def __init__(self, code: str, detail: str, *, headers: Mapping[str, str] | None = None) -> None:
        if code not in REFUSAL_STATUS:
            raise ValueError(f"unknown refusal code {code!r}; add it to REFUSAL_STATUS")
        super().__init__(detail)
        self.code = code
        self.status = REFUSAL_STATUS[code]
        self.detail = detail
        self.headers = dict(headers or {})

    def body(self) -> dict[str, str]:
        return {"error": self.code, "detail": self.detail}
