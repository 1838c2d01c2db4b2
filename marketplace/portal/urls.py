from django.urls import path

from marketplace.portal import views

app_name = "portal"

urlpatterns = [
    path("", views.home, name="home"),
    path("tasks/<int:task_id>/", views.task_detail, name="task"),
]
