"""One exception tree for domain errors, and the single place they become HTTP answers."""

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db import DataError
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class DomainError(Exception):
    """A rule of the domain was broken; `code` is stable for clients, `message` is for people."""

    status_code = 400
    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details


class NotFound(DomainError):
    """Missing and forbidden objects answer alike, so nobody can probe for what exists."""

    status_code = 404
    code = "not_found"


class Forbidden(DomainError):
    status_code = 403
    code = "forbidden"


class Conflict(DomainError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(DomainError):
    status_code = 413
    code = "too_large"


class QuotaExceeded(DomainError):
    status_code = 429
    code = "quota_exceeded"


def _error_body(code: str, message: str, details: Any = None) -> dict:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return {"error": body}


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, DomainError):
        return Response(_error_body(exc.code, exc.message, exc.details), status=exc.status_code)
    # Django's request-size guards: left alone they become its HTML 400 page.
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        message = f"The request body is over the limit of {limit} bytes."
        return Response(_error_body("too_large", message, {"limit": limit}), status=413)
    if isinstance(exc, (TooManyFieldsSent, TooManyFilesSent)):
        return Response(_error_body("too_many_fields", "The request has too many fields or files."), status=400)
    # A value its database column cannot hold (an integer past a 32-bit column on PostgreSQL; the
    # parser already refuses anything past 64 bits): the request is at fault, not the hub.
    if isinstance(exc, DataError):
        return Response(_error_body("out_of_range", "A value is outside the range the hub can store."), status=400)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, drf_exceptions.ValidationError):
        response.data = _error_body("invalid", "The request is not valid.", response.data)
    elif isinstance(exc, drf_exceptions.APIException):
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else ""
        response.data = _error_body(str(exc.get_codes()) if isinstance(exc.get_codes(), str) else "error", str(detail))
    return response
