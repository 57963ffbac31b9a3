"""The shop's views: each keeps in the session what such views usually keep."""

from __future__ import annotations

import hashlib

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_POST

CHECKOUT_STEPS = ["address", "shipping", "payment"]


def product(request: HttpRequest, product_id: int) -> HttpResponse:
    viewed = [product_id] + [
        seen for seen in request.session.get("recently_viewed", []) if seen != product_id
    ]
    request.session["recently_viewed"] = viewed[:12]
    return HttpResponse(f"product {product_id}")


@require_POST
def add_to_cart(request: HttpRequest, product_id: int) -> HttpResponse:
    cart = request.session.setdefault("cart", {"currency": "EUR", "coupon": None, "items": []})
    cart["items"].append(
        {
            "product_id": product_id,
            "quantity": int(request.POST.get("quantity", 1)),
            "unit_price": f"{(product_id % 50) + 4.99:.2f}",
            "options": dict(request.POST.items()),
        }
    )
    request.session.modified = True
    return HttpResponse("added")


def search(request: HttpRequest) -> HttpResponse:
    # Results are kept per query so that paging does not search again: one
    # key per query, a pattern that lets sessions grow without bound.
    query = request.GET.get("q", "")
    digest = hashlib.sha1(query.encode()).hexdigest()[:10]
    request.session[f"search_{digest}"] = {
        "q": query,
        "ids": [int(part) for part in request.GET.getlist("id")],
    }
    return HttpResponse("results")


@require_POST
def contact(request: HttpRequest) -> HttpResponse:
    messages.success(request, "Thank you for your message. We reply within two working days.")
    return HttpResponse("sent")


@login_required
def account(request: HttpRequest) -> HttpResponse:
    request.session.setdefault("preferences", {"language": "en", "theme": "light"})
    messages.info(request, f"Welcome back, {request.user.get_username()}.")
    return HttpResponse("account")


@require_POST
def checkout(request: HttpRequest, step: str) -> HttpResponse:
    # Laid out as django-formtools' SessionStorage keeps a wizard's state.
    wizard = request.session.setdefault(
        "wizard_checkout_wizard",
        {"step": None, "step_data": {}, "step_files": {}, "extra_data": {}},
    )
    wizard["step"] = step
    wizard["step_data"][step] = {name: [value] for name, value in request.POST.items()}
    request.session.modified = True
    return HttpResponse(f"step {step}")


@login_required
@require_POST
def report_preview(request: HttpRequest) -> HttpResponse:
    # A report builder that keeps its whole preview in the session: the kind
    # of code that leaves a few sessions tens of kilobytes big.
    rows = int(request.POST["rows"])
    request.session["report_preview"] = [
        {
            "order": 100_000 + row,
            "customer": f"customer-{row * 7919 % 10_007}",
            "total": f"{(row * 37) % 1000}.{row % 100:02d}",
            "status": ["paid", "shipped", "refunded"][row % 3],
            "payment_reference": hashlib.sha256(f"order-{row}".encode()).hexdigest(),
        }
        for row in range(rows)
    ]
    return HttpResponse("preview")
