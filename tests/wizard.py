"""Two form wizards, each keeping its steps in the session under its own prefix."""

from __future__ import annotations

from typing import Any

from django import forms
from django.http import HttpResponse
from formtools.wizard.views import SessionWizardView


class ShippingForm(forms.Form):
    name = forms.CharField(max_length=100)
    address = forms.CharField(max_length=200)
    city = forms.CharField(max_length=100)
    postcode = forms.CharField(max_length=20)


class PaymentForm(forms.Form):
    cardholder = forms.CharField(max_length=100)
    method = forms.ChoiceField(choices=[("card", "Card"), ("invoice", "Invoice")])


class ReviewForm(forms.Form):
    accept_terms = forms.BooleanField()


class CheckoutWizard(SessionWizardView):  # type: ignore[misc]
    """A checkout in three steps; abandoned half way, it leaves wizard_checkout_wizard."""

    form_list = [("shipping", ShippingForm), ("payment", PaymentForm), ("review", ReviewForm)]

    def done(self, form_list: Any, **kwargs: Any) -> HttpResponse:
        return HttpResponse("ordered")


class AccountForm(forms.Form):
    username = forms.CharField(max_length=150)
    email = forms.EmailField()


class ProfileForm(forms.Form):
    display_name = forms.CharField(max_length=100)
    bio = forms.CharField(max_length=500, required=False)


class SignupWizard(SessionWizardView):  # type: ignore[misc]
    """A second wizard, so that a session can hold two wizards' prefixes."""

    form_list = [("account", AccountForm), ("profile", ProfileForm)]

    def done(self, form_list: Any, **kwargs: Any) -> HttpResponse:
        return HttpResponse("signed up")
