from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace.accounts.access import access_acting_organization
from marketplace.accounts.models import OrganizationKind
from marketplace.accounts.selectors import is_org_admin
from marketplace.core.apis import IsPerson
from marketplace.core.errors import Forbidden
from marketplace.sites.access import access_site_by_id
from marketplace.sites.models import Site, SiteToken
from marketplace.sites.selectors import site_list_visible_to
from marketplace.sites.services import site_create, site_token_revoke, site_token_rotate


class SiteOutput(serializers.ModelSerializer):
    organization = serializers.CharField(source="organization.name")
    is_online = serializers.BooleanField()

    class Meta:
        model = Site
        fields = ["id", "name", "organization", "created_at", "last_heartbeat_at", "is_online", "capabilities"]


class SiteTokenOutput(serializers.ModelSerializer):
    class Meta:
        model = SiteToken
        fields = ["id", "display_prefix", "created_at", "last_used_at", "revoked_at"]


class SiteCreatedOutput(serializers.Serializer):
    site = SiteOutput()
    token = serializers.CharField(help_text="The site agent's secret; shown only in this answer.")


class SiteCreateInput(serializers.Serializer):
    name = serializers.CharField(max_length=120)
    organization = serializers.IntegerField(required=False)


class SiteListCreateApi(generics.ListAPIView):
    permission_classes = [IsPerson]
    serializer_class = SiteOutput


    def get_queryset(self):
        return site_list_visible_to(user=self.request.user)

    @extend_schema(request=SiteCreateInput, responses={201: SiteCreatedOutput}, tags=["sites"])
    def post(self, request):
        data = SiteCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        organization = access_acting_organization(
            request.user, kind=OrganizationKind.DATA_OWNER, organization_id=data.validated_data.get("organization")
        )
        if not is_org_admin(user=request.user, organization=organization):
            raise Forbidden("Only an admin of the organization may add sites.")
        site, raw = site_create(organization=organization, name=data.validated_data["name"], actor=request.user)
        return Response(SiteCreatedOutput({"site": site, "token": raw}).data, status=status.HTTP_201_CREATED)


class SiteDetailApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(responses=SiteOutput, tags=["sites"])
    def get(self, request, site_id: int):
        return Response(SiteOutput(access_site_by_id(request.user, site_id)).data)


class SiteTokenCreatedOutput(SiteTokenOutput):
    token = serializers.CharField()

    class Meta(SiteTokenOutput.Meta):
        fields = [*SiteTokenOutput.Meta.fields, "token"]


class SiteTokenListCreateApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(responses=SiteTokenOutput(many=True), tags=["sites"])
    def get(self, request, site_id: int):
        site = access_site_by_id(request.user, site_id, require_admin=True)
        return Response(SiteTokenOutput(site.tokens.all(), many=True).data)

    @extend_schema(request=None, responses={201: SiteTokenCreatedOutput}, tags=["sites"])
    def post(self, request, site_id: int):
        site = access_site_by_id(request.user, site_id, require_admin=True)
        token, raw = site_token_rotate(site=site, actor=request.user)
        token.token = raw
        return Response(SiteTokenCreatedOutput(token).data, status=status.HTTP_201_CREATED)


class SiteTokenRevokeApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(request=None, responses=SiteTokenOutput, tags=["sites"])
    def post(self, request, site_id: int, token_id: int):
        site = access_site_by_id(request.user, site_id, require_admin=True)
        token = site_token_revoke(site=site, token_id=token_id, actor=request.user)
        return Response(SiteTokenOutput(token).data)
