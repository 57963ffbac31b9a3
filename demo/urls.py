from __future__ import annotations

from django.contrib.auth.views import LoginView
from django.urls import include, path

from demo import views

urlpatterns = [
    path("accounts/login/", LoginView.as_view(template_name="demo/login.html")),
    path("account/", views.account),
    path("products/<int:product_id>/", views.product),
    path("cart/add/<int:product_id>/", views.add_to_cart),
    path("search/", views.search),
    path("contact/", views.contact),
    path("checkout/<str:step>/", views.checkout),
    path("reports/preview/", views.report_preview),
    path("social/", include("social_django.urls", namespace="social")),
]
