"""Views that keep things in the session the way real sites do."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse


def store(request: HttpRequest) -> HttpResponse:
    """Keep each query parameter in the session under its own name."""
    for name, value in request.GET.items():
        request.session[name] = value
    return HttpResponse("stored")


def add_to_cart(request: HttpRequest, product_id: int) -> HttpResponse:
    cart = request.session.setdefault("cart", [])
    cart.append({"product": product_id, "quantity": 1})
    request.session.modified = True
    return HttpResponse("added")


def flash(request: HttpRequest) -> HttpResponse:
    messages.success(request, request.GET.get("text", "Saved."))
    return HttpResponse("flashed")


def checkout_step(request: HttpRequest, step: int) -> HttpResponse:
    wizard = request.session.setdefault("wizard_checkout", {"step": 0, "step_data": {}})
    wizard["step"] = step
    wizard["step_data"][str(step)] = dict(request.POST.items())
    request.session.modified = True
    return HttpResponse(f"step {step}")
