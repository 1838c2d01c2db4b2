"""Sign-up, the person's account (e-mail, organizations, invitations, notifications, API tokens)
and organization pages (members, roles, invitations, webhooks)."""

from django.contrib import messages
from django.contrib.auth import login
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from marketplace.accounts.access import (
    access_invitation_for_invitee,
    access_invitation_of_organization,
    access_organization_by_id,
)
from marketplace.accounts.models import MemberRole
from marketplace.accounts.selectors import (
    invitations_of,
    invitations_open_for,
    is_org_admin,
    members_of,
    memberships_of,
    personal_tokens_of,
)
from marketplace.accounts.services import (
    account_email_set,
    account_sign_up,
    invitation_accept,
    invitation_by_key,
    invitation_create,
    invitation_decline,
    invitation_is_open,
    invitation_revoke,
    membership_leave,
    membership_set_role,
    organization_create,
    personal_token_create,
    personal_token_revoke,
)
from marketplace.core.errors import DomainError, NotFound
from marketplace.notifications.selectors import email_events_of, recent_deliveries_of, webhooks_of
from marketplace.notifications.services import (
    notification_preferences_set,
    webhook_endpoint_create,
    webhook_endpoint_delete,
)
from marketplace.portal.forms import (
    EmailForm,
    InviteForm,
    NotificationPreferencesForm,
    OrganizationForm,
    RoleForm,
    SignUpForm,
    TokenCreateForm,
    WebhookForm,
)
from marketplace.portal.views._common import domain_error_to_form, funnelled, person_required


def sign_up(request):
    if request.user.is_authenticated:
        return redirect("portal:account")
    invitation_key = request.POST.get("invitation") or request.GET.get("invitation") or ""
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            user = account_sign_up(
                username=data["username"], password=data["password1"], email=data["email"],
                organization_name=data["organization_name"], kind=data["kind"], invitation_key=invitation_key,
            )  # fmt: skip
        except DomainError as exc:
            field = {"username_taken": "username", "email_taken": "email", "invalid_email": "email"}.get(exc.code)
            form.add_error(field or ("organization_name" if exc.code == "kind_required" else None), exc.message)
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            messages.success(request, f"Welcome, {user.username}.")
            return redirect("portal:account")
    return render(request, "registration/signup.html", {"form": form, "invitation_key": invitation_key})


def _account_page(request, *, form=None, email_form=None, notifications_form=None):
    user = request.user
    return render(request, "portal/account.html", {
        "memberships": memberships_of(user=user),
        "invitations": invitations_open_for(user=user),
        "form": form or OrganizationForm(),
        "email_form": email_form or EmailForm(initial={"email": user.email}),
        "notifications_form": notifications_form
        or NotificationPreferencesForm(initial={"email_events": email_events_of(user=user)}),
    })  # fmt: skip


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
    return _account_page(request, form=form if request.method == "POST" else None)


@require_POST
@person_required
def account_email(request):
    form = EmailForm(request.POST)
    if form.is_valid():
        try:
            account_email_set(user=request.user, email=form.cleaned_data["email"])
        except DomainError as exc:
            form.add_error("email", exc.message)
        else:
            messages.success(request, "E-mail address saved.")
            return redirect("portal:account")
    return _account_page(request, email_form=form)


@require_POST
@person_required
def account_notifications(request):
    form = NotificationPreferencesForm(request.POST)
    if form.is_valid():
        notification_preferences_set(user=request.user, email_events=form.cleaned_data["email_events"])
        messages.success(request, "Notification preferences saved.")
        return redirect("portal:account")
    return _account_page(request, notifications_form=form)


@require_POST
@person_required
def invitation_answer(request, invitation_id: int, answer: str):
    invitation = access_invitation_for_invitee(request.user, invitation_id)
    try:
        if answer == "accept":
            invitation_accept(invitation=invitation, user=request.user)
            messages.success(request, f"You joined {invitation.organization.name}.")
        else:
            invitation_decline(invitation=invitation, user=request.user)
            messages.success(request, f"You declined the invitation to {invitation.organization.name}.")
    except DomainError as exc:
        messages.error(request, exc.message)
    return redirect("portal:account")


@funnelled
def invitation_by_link(request, key: str):
    """The link mailed to an invited address: log in or sign up, then accept or decline here."""
    try:
        invitation = invitation_by_key(key)
    except NotFound:
        return render(request, "portal/invitation.html", {"invitation": None}, status=404)
    is_open = invitation_is_open(invitation)
    if request.method == "POST" and request.user.is_authenticated and is_open:
        try:
            if request.POST.get("answer") == "accept":
                invitation_accept(invitation=invitation, user=request.user)
                messages.success(request, f"You joined {invitation.organization.name}.")
                return redirect("portal:organization", organization_id=invitation.organization_id)
            invitation_decline(invitation=invitation, user=request.user)
            messages.success(request, "Invitation declined.")
            return redirect("portal:account")
        except DomainError as exc:
            messages.error(request, exc.message)
    someone_else = bool(
        request.user.is_authenticated and invitation.invitee_id and invitation.invitee_id != request.user.id
    )
    return render(request, "portal/invitation.html", {
        "invitation": invitation, "key": key, "is_open": is_open, "someone_else": someone_else,
    })  # fmt: skip


@require_POST
@person_required
def organization_leave(request, organization_id: int):
    organization = access_organization_by_id(request.user, organization_id)
    try:
        membership_leave(organization=organization, user=request.user)
    except DomainError as exc:
        messages.error(request, exc.message)
        return redirect("portal:organization", organization_id=organization.id)
    messages.success(request, f"You left {organization.name}.")
    return redirect("portal:account")


def _organization_page(request, organization, *, invite_form=None, webhook_form=None, created_webhook=None,
                       created_invitation=None, status=200):  # fmt: skip
    is_admin = is_org_admin(user=request.user, organization=organization)
    context = {
        "organization": organization, "members": members_of(organization=organization), "is_admin": is_admin,
        "member_roles": MemberRole.choices,
    }  # fmt: skip
    if is_admin:
        context.update(
            form=invite_form or InviteForm(), webhook_form=webhook_form or WebhookForm(),
            invitations=invitations_of(organization=organization)[:50], webhooks=webhooks_of(organization=organization),
            deliveries=recent_deliveries_of(organization=organization), created_webhook=created_webhook,
            created_invitation=created_invitation,
        )  # fmt: skip
    return render(request, "portal/organization.html", context, status=status)


@person_required
def organization_detail(request, organization_id: int):
    organization = access_organization_by_id(request.user, organization_id)
    if request.method != "POST":
        return _organization_page(request, organization)
    organization = access_organization_by_id(request.user, organization_id, require_admin=True)
    form = InviteForm(request.POST)
    if form.is_valid():
        invitee = form.cleaned_data["invitee"].strip()
        by_email = "@" in invitee
        try:
            invitation_create(
                organization=organization, actor=request.user, role=form.cleaned_data["role"],
                username="" if by_email else invitee, email=invitee if by_email else "",
            )  # fmt: skip
        except DomainError as exc:
            form.add_error("invitee", exc.message)
        else:
            messages.success(request, f"Invitation sent to {invitee}. They join once they accept.")
            return redirect("portal:organization", organization_id=organization.id)
    return _organization_page(request, organization, invite_form=form)


@require_POST
@person_required
def member_role(request, organization_id: int, username: str):
    organization = access_organization_by_id(request.user, organization_id, require_admin=True)
    form = RoleForm(request.POST)
    if form.is_valid():
        try:
            membership_set_role(
                organization=organization, username=username, role=form.cleaned_data["role"], actor=request.user
            )
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"{username} is now {MemberRole(form.cleaned_data['role']).label.lower()}.")
    return redirect("portal:organization", organization_id=organization.id)


@require_POST
@person_required
def organization_invitation_revoke(request, organization_id: int, invitation_id: int):
    invitation = access_invitation_of_organization(request.user, organization_id, invitation_id)
    try:
        invitation_revoke(invitation=invitation, actor=request.user)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Invitation revoked.")
    return redirect("portal:organization", organization_id=organization_id)


@require_POST
@person_required
def organization_webhooks(request, organization_id: int):
    organization = access_organization_by_id(request.user, organization_id, require_admin=True)
    form = WebhookForm(request.POST)
    if form.is_valid():
        try:
            endpoint, secret = webhook_endpoint_create(
                organization=organization, actor=request.user, url=form.cleaned_data["url"],
                events=form.cleaned_data["events"],
            )  # fmt: skip
        except DomainError as exc:
            form.add_error("url", exc.message)
        else:
            # The signing secret is rendered in this one answer only.
            return _organization_page(request, organization, created_webhook={"endpoint": endpoint, "secret": secret})
    return _organization_page(request, organization, webhook_form=form)


@require_POST
@person_required
def organization_webhook_delete(request, organization_id: int, webhook_id: int):
    organization = access_organization_by_id(request.user, organization_id, require_admin=True)
    webhook_endpoint_delete(organization=organization, actor=request.user, endpoint_id=webhook_id)
    messages.success(request, "Webhook deleted.")
    return redirect("portal:organization", organization_id=organization.id)


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
