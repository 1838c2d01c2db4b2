from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(("marketplace.api_urls", "api"))),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI from this hub's static files (drf-spectacular-sidecar), its initializer a served
    # script (no inline code: the Content-Security-Policy allows none), so the docs work offline.
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="schema", template_name="portal/swagger_ui.html"),
        name="swagger-ui",
    ),
    # Password reset with the portal's pages (the admin app's would win the template lookup).
    path("accounts/password_reset/", auth_views.PasswordResetView.as_view(
        template_name="portal/auth/password_reset_form.html", email_template_name="portal/auth/password_reset_email.html",
        subject_template_name="portal/auth/password_reset_subject.txt"), name="password_reset"),  # fmt: skip
    path("accounts/password_reset/done/", auth_views.PasswordResetDoneView.as_view(
        template_name="portal/auth/password_reset_done.html"), name="password_reset_done"),  # fmt: skip
    path("accounts/reset/<uidb64>/<token>/", auth_views.PasswordResetConfirmView.as_view(
        template_name="portal/auth/password_reset_confirm.html"), name="password_reset_confirm"),  # fmt: skip
    path("accounts/reset/done/", auth_views.PasswordResetCompleteView.as_view(
        template_name="portal/auth/password_reset_complete.html"), name="password_reset_complete"),  # fmt: skip
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("marketplace.portal.urls")),
]
