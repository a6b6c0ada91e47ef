"""A stand-in for the part of Stripe's API EnvelopePay uses: Checkout with card and ACH,
PaymentIntents, Charges, Refunds, Connect transfers, signed webhooks."""

from sandbox.stripe.app import create_app
from sandbox.stripe.settings import StripeSandboxSettings
from sandbox.stripe.state import SandboxState
from sandbox.stripe.webhooks import signature_header

__all__ = ["SandboxState", "StripeSandboxSettings", "create_app", "signature_header"]
