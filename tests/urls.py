from __future__ import annotations

from django.contrib.auth.views import LoginView
from django.urls import include, path

from tests import views
from tests.wizard import CheckoutWizard, SignupWizard

urlpatterns = [
    path("store/", views.store),
    path("login/", LoginView.as_view(template_name="login.html")),
    path("cart/add/<int:product_id>/", views.add_to_cart),
    path("flash/", views.flash),
    path("checkout/<int:step>/", views.checkout_step),
    path("accounts/", include("allauth.urls")),
    path("social/", include("social_django.urls", namespace="social")),
    path("wizard/checkout/", CheckoutWizard.as_view()),
    path("wizard/signup/", SignupWizard.as_view()),
]
