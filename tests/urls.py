from __future__ import annotations

from django.contrib.auth.views import LoginView
from django.urls import path

from tests import views

urlpatterns = [
    path("store/", views.store),
    path("login/", LoginView.as_view(template_name="login.html")),
    path("cart/add/<int:product_id>/", views.add_to_cart),
    path("flash/", views.flash),
    path("checkout/<int:step>/", views.checkout_step),
]
