"""Notification settings over the API: a person's e-mail preferences, an organization's webhooks."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace.accounts.access import access_organization_by_id
from marketplace.core.apis import IsPerson
from marketplace.notifications.models import Event, WebhookEndpoint
from marketplace.notifications.selectors import email_events_of, webhooks_of
from marketplace.notifications.services import (
    notification_preferences_set,
    webhook_endpoint_create,
    webhook_endpoint_delete,
)


class PreferencesSerializer(serializers.Serializer):
    email_events = serializers.ListField(child=serializers.ChoiceField(choices=Event.choices), max_length=len(Event.values))


class MyNotificationsApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(responses=PreferencesSerializer, tags=["notifications"])
    def get(self, request):
        return Response({"email_events": email_events_of(user=request.user)})

    @extend_schema(request=PreferencesSerializer, responses=PreferencesSerializer, tags=["notifications"])
    def put(self, request):
        data = PreferencesSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        notification_preferences_set(user=request.user, email_events=data.validated_data["email_events"])
        return Response({"email_events": email_events_of(user=request.user)})


class WebhookOutput(serializers.ModelSerializer):
    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "events", "is_active", "created_at"]


class WebhookCreatedOutput(WebhookOutput):
    secret = serializers.CharField(help_text="The signing secret; shown only in this answer.")

    class Meta(WebhookOutput.Meta):
        fields = [*WebhookOutput.Meta.fields, "secret"]


class WebhookCreateInput(serializers.Serializer):
    url = serializers.URLField(max_length=500)
    events = serializers.ListField(child=serializers.ChoiceField(choices=Event.choices), min_length=1, max_length=len(Event.values))


class OrganizationWebhooksApi(APIView):
    """An organization's webhook receivers (its admins only)."""

    permission_classes = [IsPerson]

    @extend_schema(responses=WebhookOutput(many=True), tags=["notifications"])
    def get(self, request, organization_id: int):
        organization = access_organization_by_id(request.user, organization_id, require_admin=True)
        return Response(WebhookOutput(webhooks_of(organization=organization), many=True).data)

    @extend_schema(request=WebhookCreateInput, responses={201: WebhookCreatedOutput}, tags=["notifications"])
    def post(self, request, organization_id: int):
        organization = access_organization_by_id(request.user, organization_id, require_admin=True)
        data = WebhookCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint, secret = webhook_endpoint_create(organization=organization, actor=request.user, **data.validated_data)
        endpoint.secret = secret
        return Response(WebhookCreatedOutput(endpoint).data, status=status.HTTP_201_CREATED)


class OrganizationWebhookDeleteApi(APIView):
    permission_classes = [IsPerson]

    @extend_schema(request=None, responses={204: None}, tags=["notifications"])
    def post(self, request, organization_id: int, webhook_id: int):
        organization = access_organization_by_id(request.user, organization_id, require_admin=True)
        webhook_endpoint_delete(organization=organization, actor=request.user, endpoint_id=webhook_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
