"""Sign-up, the person's account (organizations, API tokens) and organization pages."""

from django.contrib import messages
from django.contrib.auth import login
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from marketplace.accounts.access import access_organization_by_id
from marketplace.accounts.selectors import is_org_admin, members_of, organizations_of, personal_tokens_of
from marketplace.accounts.services import (
    account_sign_up,
    membership_add,
    organization_create,
    personal_token_create,
    personal_token_revoke,
)
from marketplace.core.errors import DomainError
from marketplace.portal.forms import MemberAddForm, OrganizationForm, SignUpForm, TokenCreateForm
from marketplace.portal.views._common import domain_error_to_form, person_required


def sign_up(request):
    if request.user.is_authenticated:
        return redirect("portal:account")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            user = account_sign_up(
                username=data["username"], password=data["password1"],
                organization_name=data["organization_name"], kind=data["kind"],
            )  # fmt: skip
        except DomainError as exc:
            form.add_error("username" if exc.code == "username_taken" else "organization_name", exc.message)
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            messages.success(request, f"Welcome, {user.username}.")
            return redirect("portal:account")
    return render(request, "registration/signup.html", {"form": form})


@person_required
def account(request):
    form = OrganizationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            organization = organization_create(creator=request.user, **form.cleaned_data)
        except DomainError as exc:
            domain_error_to_form(form, exc)
        else:
            messages.success(request, f"Organization {organization.name} created.")
            return redirect("portal:organization", organization_id=organization.id)
    organizations = organizations_of(user=request.user).order_by("name")
    return render(request, "portal/account.html", {"organizations": organizations, "form": form})


@person_required
def organization_detail(request, organization_id: int):
    organization = access_organization_by_id(request.user, organization_id)
    is_admin = is_org_admin(user=request.user, organization=organization)
    form = MemberAddForm(request.POST or None) if is_admin else None
    if request.method == "POST":
        organization = access_organization_by_id(request.user, organization_id, require_admin=True)
        if form.is_valid():
            try:
                membership_add(organization=organization, actor=request.user, **form.cleaned_data)
            except DomainError as exc:
                domain_error_to_form(form, exc)
            else:
                messages.success(
                    request, f"{form.cleaned_data['username']} is now a {form.cleaned_data['role']}."
                )
                return redirect("portal:organization", organization_id=organization.id)
    return render(
        request,
        "portal/organization.html",
        {"organization": organization, "members": members_of(organization=organization), "is_admin": is_admin,
         "form": form},
    )  # fmt: skip


@person_required
def tokens(request):
    form = TokenCreateForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        token, raw = personal_token_create(user=request.user, name=form.cleaned_data["name"])
        # The secret is rendered in this one answer only; it is never stored or shown again.
        created = {"token": token, "raw": raw}
        form = TokenCreateForm()
    return render(
        request,
        "portal/tokens.html",
        {"tokens": personal_tokens_of(user=request.user), "form": form, "created": created},
    )


@require_POST
@person_required
def token_revoke(request, token_id: int):
    token = personal_token_revoke(user=request.user, token_id=token_id)
    messages.success(request, f"Token {token.name} revoked.")
    return redirect("portal:tokens")
