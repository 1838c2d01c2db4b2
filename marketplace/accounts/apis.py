from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace.accounts.access import access_organization_by_id
from marketplace.accounts.models import MemberRole, Membership, Organization, OrganizationKind, PersonalToken
from marketplace.accounts.selectors import organizations_of, personal_tokens_of
from marketplace.accounts.services import (
    membership_add,
    organization_create,
    personal_token_create,
    personal_token_revoke,
)
from marketplace.core.apis import IsPerson


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
    organizations = OrganizationOutput(many=True)


class MeApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(responses=MeOutput, tags=["accounts"])
    def get(self, request):
        user = request.user
        data = {"id": user.id, "username": user.username, "organizations": organizations_of(user=user)}
        return Response(MeOutput(data).data)


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


class MemberAddInput(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=MemberRole.choices, default=MemberRole.MEMBER)


class MemberAddApi(APIView):
    permission_classes = [IsPerson]


    @extend_schema(request=MemberAddInput, responses={201: MemberOutput}, tags=["accounts"])
    def post(self, request, organization_id: int):
        organization = access_organization_by_id(request.user, organization_id, require_admin=True)
        data = MemberAddInput(data=request.data)
        data.is_valid(raise_exception=True)
        membership = membership_add(organization=organization, actor=request.user, **data.validated_data)
        return Response(MemberOutput(membership).data, status=status.HTTP_201_CREATED)


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


User = get_user_model()
