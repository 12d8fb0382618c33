"""Errors the router returns to clients, all rendered in OpenAI's `{"error": {...}}` shape.

Every failure a client can see is one of these classes, so the app has exactly one place that turns
an exception into a response, and callers catch families rather than individual cases::

    RouterError                      any error with an HTTP status and an OpenAI error body
    ├── BadRequest              400  malformed JSON, missing fields, wrong types, an invalid schema
    │   └── ContextLengthExceeded   400  the request fits no endpoint's context window
    ├── ModelNotFound           404  model alias not served by this policy
    ├── NotFound                404  unknown path
    ├── MethodNotAllowed        405  known path, wrong method
    ├── PayloadTooLarge         413  body over the configured limit
    ├── BudgetExhausted         429  a spend cap is reached (action reject) and the request needed cloud;
    │                                `x-should-retry: false` tells OpenAI's SDKs not to retry it
    ├── NotReady                503  no valid config loaded yet
    ├── NoEligibleEndpoint      503  every endpoint filtered out (the message names why)
    │   └── PrivateRequestRefused 503  a private request no local endpoint could take (code
    │                                  private_no_local), whatever the local fault was
    └── UpstreamFailed               every attempt failed before a byte reached the client
        ├── UpstreamInvalidResponse  502  an upstream answered garbage (non-JSON where JSON was due)
        ├── UpstreamUnavailable      503  connect errors, 5xx, 429 on every attempt
        └── UpstreamTimeout          504  every attempt timed out

Anything else raised while serving is a bug: the app answers it with a 500 in the same shape (code
`internal_error`) and logs only the exception's type and where it was raised.

Messages are written for the client and never carry API keys, prompt text or upstream bodies.
"""

from __future__ import annotations

from typing import ClassVar

import orjson


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    """Serialized OpenAI error object."""
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


class RouterError(Exception):
    """Base class: carries the HTTP status and the OpenAI `type`/`code` of the error body."""

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    code: ClassVar[str | None] = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def body(self) -> bytes:
        return error_body(self.message, self.error_type, self.code, self.param)

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"content-type", b"application/json")]


class BadRequest(RouterError):
    status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class ContextLengthExceeded(BadRequest):
    code = "context_length_exceeded"


class ModelNotFound(RouterError):
    status = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class NotFound(RouterError):
    status = 404
    error_type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(RouterError):
    status = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(RouterError):
    status = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class BudgetExhausted(RouterError):
    """OpenAI answers a spent quota with 429 `insufficient_quota`; so do we, with the cap that was hit.

    Retrying cannot help before the window resets (UTC midnight or the first of the month), so the
    response says so to OpenAI's SDKs, which otherwise retry every 429.
    """

    status = 429
    error_type = "insufficient_quota"
    code = "budget_exhausted"

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [*super().headers(), (b"x-should-retry", b"false")]


class NotReady(RouterError):
    status = 503
    error_type = "server_error"
    code = "router_not_ready"


class NoEligibleEndpoint(RouterError):
    status = 503
    error_type = "server_error"
    code = "no_eligible_endpoint"


class PrivateRequestRefused(NoEligibleEndpoint):
    """The one refusal of a private request: no local endpoint could take or answer it.

    Whatever went wrong locally (no local endpoint, breaker open, timeout, 5xx, reset, an invalid
    answer, a redirect), a private request gets this 503; the message says it is private, why
    (`header`, `detector:<name>`, ...), what each local endpoint did, and that the cloud was not tried.
    """

    code = "private_no_local"

    @classmethod
    def for_request(
        cls, reasons: tuple[str, ...], local_faults: str, waited_ms: float | None = None
    ) -> PrivateRequestRefused:
        """`waited_ms`: how long it waited on local endpoints before the refusal, when it was sent at all."""
        waited = "" if waited_ms is None else f"; waited {waited_ms:.0f} ms for local endpoints"
        return cls(
            f"private request ({', '.join(reasons)}): no local endpoint could answer it ({local_faults}){waited}; "
            "the cloud was not tried: cloud endpoints never receive a private request"
        )


class UpstreamFailed(RouterError):
    """Every attempt failed before the first byte reached the client."""


class UpstreamInvalidResponse(UpstreamFailed):
    status = 502
    error_type = "upstream_error"
    code = "upstream_invalid_response"


class UpstreamUnavailable(UpstreamFailed):
    status = 503
    error_type = "upstream_error"
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamFailed):
    status = 504
    error_type = "upstream_error"
    code = "upstream_timeout"
