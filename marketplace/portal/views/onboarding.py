"""Onboarding pages: the model contract, a task's starter kit, accepting a task's rules."""

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST
from markdown_it import MarkdownIt

from marketplace.accounts.access import access_acting_organization
from marketplace.accounts.models import OrganizationKind
from marketplace.catalog.access import access_task_by_id
from marketplace.core.errors import DomainError
from marketplace.portal.onboarding import CONTRACT, starter_kit_zip
from marketplace.portal.views._common import funnelled, redirect_back, vendor_required
from marketplace.submissions.services import rules_accept


def model_contract(request):
    """docs/model-contract.md as a page (the repository's own text; raw HTML in it is not rendered)."""
    html = MarkdownIt("commonmark", {"html": False}).enable("table").render(CONTRACT.read_text())
    return render(request, "portal/model_contract.html", {"contract": html})


@funnelled
def starter_kit(request, task_id: int):
    task = access_task_by_id(request.user, task_id)
    response = HttpResponse(starter_kit_zip(task), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{task.slug}-starter-kit.zip"'
    return response


@require_POST
@vendor_required
def task_rules_accept(request, task_id: int):
    organization_id = request.POST.get("organization")
    vendor = access_acting_organization(
        request.user, kind=OrganizationKind.VENDOR,
        organization_id=int(organization_id) if organization_id and organization_id.isdigit() else None,
    )  # fmt: skip
    task = access_task_by_id(request.user, task_id)
    try:
        rules_accept(task=task, vendor=vendor, actor=request.user)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{vendor.name} accepted the rules of {task.title}.")
    return redirect_back(request, "portal:task", task_id=task.id)
