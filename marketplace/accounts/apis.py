from django.contrib.auth import authenticate, get_user_model, password_validation
from django.core.exceptions import ValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from marketplace.accounts.access import (
    access_invitation_for_invitee,
    access_invitation_of_organization,
    access_organization_by_id,
)
from marketplace.accounts.models import (
    Invitation,
    MemberRole,
    Membership,
    Organization,
    OrganizationKind,
    PersonalToken,
)
from marketplace.accounts.selectors import (
    invitations_of,
    invitations_open_for,
    organizations_of,
    personal_tokens_of,
)
from marketplace.accounts.services import (
    account_email_set,
    account_sign_up,
    invitation_accept,
    invitation_by_key,
    invitation_create,
    invitation_decline,
    invitation_revoke,
    membership_leave,
    membership_set_role,
    organization_create,
    personal_token_create,
    personal_token_revoke,
)
from marketplace.core.apis import IsPerson
from marketplace.core.errors import DomainError


class OrganizationOutput(serializers.ModelSerializer):
    class Meta:
        model = Organization
        fields = ["id", "name", "slug", "kind", "created_at"]


class MemberOutput(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")

    class Meta:
        model = Membership
        fields = ["username", "role", "created_at"]


class OrganizationDetailOutput(OrganizationOutput):
    members = MemberOutput(source="memberships", many=True)

    class Meta(OrganizationOutput.Meta):
        fields = [*OrganizationOutput.Meta.fields, "members"]


class MeOutput(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.EmailField(allow_blank=True)
    organizations = OrganizationOutput(many=True)


class MeUpdateInput(serializers.Serializer):
    email = serializers.CharField(max_length=254)


def _me(user) -> dict:
    return MeOutput(
        {"id": user.id, "username": user.username, "email": user.email, "organizations": organizations_of(user=user)}
    ).data


class MeApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(responses=MeOutput, tags=["accounts"])
    def get(self, request):
        return Response(_me(request.user))

    @extend_schema(request=MeUpdateInput, responses=MeOutput, tags=["accounts"])
    def patch(self, request):
        data = MeUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        account_email_set(user=request.user, email=data.validated_data["email"])
        return Response(_me(request.user))


class OrganizationCreateInput(serializers.Serializer):
    name = serializers.CharField(max_length=120)
    kind = serializers.ChoiceField(choices=OrganizationKind.choices)


class OrganizationListCreateApi(generics.ListAPIView):
    permission_classes = [IsPerson]
    serializer_class = OrganizationOutput


    def get_queryset(self):
        return organizations_of(user=self.request.user).order_by("name")

    @extend_schema(request=OrganizationCreateInput, responses={201: OrganizationOutput}, tags=["accounts"])
    def post(self, request):
        data = OrganizationCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        organization = organization_create(creator=request.user, **data.validated_data)
        return Response(OrganizationOutput(organization).data, status=status.HTTP_201_CREATED)


class OrganizationDetailApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(responses=OrganizationDetailOutput, tags=["accounts"])
    def get(self, request, organization_id: int):
        organization = access_organization_by_id(request.user, organization_id)
        return Response(OrganizationDetailOutput(organization).data)


class TokenOutput(serializers.ModelSerializer):
    class Meta:
        model = PersonalToken
        fields = ["id", "name", "display_prefix", "created_at", "last_used_at", "revoked_at"]


class TokenCreatedOutput(TokenOutput):
    token = serializers.CharField(help_text="The secret; shown only in this answer.")

    class Meta(TokenOutput.Meta):
        fields = [*TokenOutput.Meta.fields, "token"]


class TokenCreateInput(serializers.Serializer):
    name = serializers.CharField(max_length=80)


class TokenListCreateApi(generics.ListAPIView):
    permission_classes = [IsPerson]
    serializer_class = TokenOutput
    queryset = PersonalToken.objects.none()  # for the schema; real rows come from get_queryset


    def get_queryset(self):
        return personal_tokens_of(user=self.request.user)

    @extend_schema(request=TokenCreateInput, responses={201: TokenCreatedOutput}, tags=["accounts"])
    def post(self, request):
        data = TokenCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        token, raw = personal_token_create(user=request.user, name=data.validated_data["name"])
        token.token = raw
        return Response(TokenCreatedOutput(token).data, status=status.HTTP_201_CREATED)


class TokenRevokeApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(request=None, responses=TokenOutput, tags=["accounts"])
    def post(self, request, token_id: int):
        token = personal_token_revoke(user=request.user, token_id=token_id)
        return Response(TokenOutput(token).data)




# --- accounts for automated set-ups: no session, no CSRF token ----------------------------------

User = get_user_model()


def _password_errors(password: str, *, username: str, email: str) -> list[str]:
    try:
        password_validation.validate_password(password, User(username=username, email=email))
    except ValidationError as exc:
        return list(exc.messages)
    return []


class SignUpInput(serializers.Serializer):
    username = serializers.RegexField(r"^[\w.@+-]+\Z", max_length=150)
    email = serializers.CharField(max_length=254)
    password = serializers.CharField(max_length=128, trim_whitespace=False, write_only=True)
    organization_name = serializers.CharField(max_length=120, required=False, default="")
    kind = serializers.ChoiceField(choices=OrganizationKind.choices, required=False, default="")
    invitation = serializers.CharField(max_length=100, required=False, default="", help_text="An invitation's secret (from its e-mail) to accept.")
    token_name = serializers.CharField(max_length=80, required=False, default="", help_text="Also create a personal API token with this name.")


class SignUpOutput(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.EmailField()
    organizations = OrganizationOutput(many=True)
    token = serializers.CharField(required=False, help_text="The personal token's secret, when asked for; shown only here.")


class SignUpApi(APIView):
    """Sign up over the API, with the portal's checks (username, e-mail, password rules, the
    organization or invitation). Throttled per client address."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "sign_up"

    @extend_schema(request=SignUpInput, responses={201: SignUpOutput}, tags=["accounts"], auth=[])
    def post(self, request):
        data = SignUpInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        errors = _password_errors(v["password"], username=v["username"], email=v["email"])
        if errors:
            raise DomainError("The password is too weak.", code="invalid", details={"password": errors})
        if bool(v["organization_name"]) != bool(v["kind"]):
            raise DomainError("Give both an organization name and its kind, or neither.", code="kind_required")
        user = account_sign_up(
            username=v["username"], password=v["password"], email=v["email"],
            organization_name=v["organization_name"], kind=v["kind"], invitation_key=v["invitation"],
        )  # fmt: skip
        body = dict(_me(user))
        if v["token_name"]:
            _, body["token"] = personal_token_create(user=user, name=v["token_name"])
        return Response(body, status=status.HTTP_201_CREATED)


class PasswordTokenInput(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=128, trim_whitespace=False, write_only=True)
    name = serializers.CharField(max_length=80)


class PasswordTokenApi(APIView):
    """A personal token from a username and password (the first token of a CLI or a CI job).
    Failed attempts count towards the log-in lockout (django-axes) like the portal's form."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(request=PasswordTokenInput, responses={201: TokenCreatedOutput}, tags=["accounts"], auth=[])
    def post(self, request):
        data = PasswordTokenInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        django_request = request._request
        user = authenticate(django_request, username=v["username"], password=v["password"])
        if getattr(django_request, "axes_locked_out", False):
            return Response(
                {"error": {"code": "locked_out", "message": "Too many failed log-ins: try again later."}},
                status=status.HTTP_429_TOO_MANY_REQUESTS,
            )
        if user is None:
            return Response(
                {"error": {"code": "invalid_credentials", "message": "Wrong username or password."}},
                status=status.HTTP_401_UNAUTHORIZED,
            )
        token, raw = personal_token_create(user=user, name=v["name"])
        token.token = raw
        return Response(TokenCreatedOutput(token).data, status=status.HTTP_201_CREATED)


# --- invitations and memberships ---------------------------------------------------------------

class InvitationOutput(serializers.ModelSerializer):
    organization = OrganizationOutput()
    invitee = serializers.CharField(source="invitee.username", allow_null=True, default=None)
    invited_by = serializers.CharField(source="invited_by.username", allow_null=True, default=None)

    class Meta:
        model = Invitation
        fields = ["id", "organization", "invitee", "email", "role", "status", "invited_by", "created_at", "expires_at", "answered_at"]


class InvitationCreatedOutput(InvitationOutput):
    token = serializers.CharField(help_text="The invitation's secret (also e-mailed); shown only here.")

    class Meta(InvitationOutput.Meta):
        fields = [*InvitationOutput.Meta.fields, "token"]


class InvitationCreateInput(serializers.Serializer):
    username = serializers.CharField(max_length=150, required=False, default="")
    email = serializers.CharField(max_length=254, required=False, default="")
    role = serializers.ChoiceField(choices=MemberRole.choices, default=MemberRole.MEMBER)


class OrganizationInvitationsApi(generics.ListAPIView):
    permission_classes = [IsPerson]
    serializer_class = InvitationOutput
    queryset = Invitation.objects.none()  # for the schema

    def get_queryset(self):
        organization = access_organization_by_id(self.request.user, self.kwargs["organization_id"], require_admin=True)
        return invitations_of(organization=organization).select_related("organization")

    @extend_schema(request=InvitationCreateInput, responses={201: InvitationCreatedOutput}, tags=["accounts"])
    def post(self, request, organization_id: int):
        organization = access_organization_by_id(request.user, organization_id, require_admin=True)
        data = InvitationCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        invitation, raw = invitation_create(organization=organization, actor=request.user, **data.validated_data)
        invitation.token = raw
        return Response(InvitationCreatedOutput(invitation).data, status=status.HTTP_201_CREATED)


class OrganizationInvitationRevokeApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(request=None, responses=InvitationOutput, tags=["accounts"])
    def post(self, request, organization_id: int, invitation_id: int):
        invitation = access_invitation_of_organization(request.user, organization_id, invitation_id)
        return Response(InvitationOutput(invitation_revoke(invitation=invitation, actor=request.user)).data)


class MyInvitationsApi(generics.ListAPIView):
    """Open invitations addressed to me by username."""

    permission_classes = [IsPerson]
    serializer_class = InvitationOutput
    queryset = Invitation.objects.none()

    def get_queryset(self):
        return invitations_open_for(user=self.request.user)


class InvitationAnswerApi(APIView):
    permission_classes = [IsPerson]
    accept = True

    @extend_schema(request=None, responses=InvitationOutput, tags=["accounts"])
    def post(self, request, invitation_id: int):
        invitation = access_invitation_for_invitee(request.user, invitation_id)
        if self.accept:
            invitation_accept(invitation=invitation, user=request.user)
        else:
            invitation_decline(invitation=invitation, user=request.user)
        invitation.refresh_from_db()
        return Response(InvitationOutput(invitation).data)


class InvitationRedeemInput(serializers.Serializer):
    token = serializers.CharField(max_length=100)


class InvitationRedeemApi(APIView):
    """Accept an invitation by its secret (the link mailed to an invited address)."""

    permission_classes = [IsPerson]

    @extend_schema(request=InvitationRedeemInput, responses=InvitationOutput, tags=["accounts"])
    def post(self, request):
        data = InvitationRedeemInput(data=request.data)
        data.is_valid(raise_exception=True)
        invitation = invitation_by_key(data.validated_data["token"])
        invitation_accept(invitation=invitation, user=request.user)
        invitation.refresh_from_db()
        return Response(InvitationOutput(invitation).data)


class RoleInput(serializers.Serializer):
    role = serializers.ChoiceField(choices=MemberRole.choices)


class MemberRoleApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(request=RoleInput, responses=MemberOutput, tags=["accounts"])
    def post(self, request, organization_id: int, username: str):
        organization = access_organization_by_id(request.user, organization_id, require_admin=True)
        data = RoleInput(data=request.data)
        data.is_valid(raise_exception=True)
        membership = membership_set_role(
            organization=organization, username=username, role=data.validated_data["role"], actor=request.user
        )
        return Response(MemberOutput(membership).data)


class OrganizationLeaveApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(request=None, responses={204: None}, tags=["accounts"])
    def post(self, request, organization_id: int):
        organization = access_organization_by_id(request.user, organization_id)
        membership_leave(organization=organization, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
