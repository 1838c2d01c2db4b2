"""django-axes' answer to a locked-out log-in: the API's JSON error body, or the portal's page."""

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render


def lockout_response(request, original_response=None, credentials=None):
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    message = f"Too many failed log-ins for this user from this address: try again in {minutes} minutes."
    if request.path.startswith("/api/"):
        body = {"error": {"code": "locked_out", "message": message, "details": {"retry_after_minutes": minutes}}}
        response = JsonResponse(body, status=429)
    else:
        response = render(request, "registration/locked_out.html", {"minutes": minutes}, status=429)
    response["Retry-After"] = str(minutes * 60)
    return response
