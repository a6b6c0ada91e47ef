"""Runtime settings of the Stripe sandbox, read from STRIPE_SANDBOX_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

# The version stripe-python 16.1 pins; events say which version shaped their objects.
API_VERSION = "2026-10-28.endive"
# Connected accounts that exist from the start, so a local run can transfer to a firm's
# operating and trust accounts without first creating them.
DEFAULT_ACCOUNTS = ("acct_1DemoLawOperating", "acct_1DemoLawTrust0000")


@dataclass(frozen=True)
class StripeSandboxSettings:
    host: str = "127.0.0.1"
    port: int = 8091
    # Base of the hosted checkout page URLs; None: the address the request came in on.
    public_url: str | None = None
    # Secret keys accepted; empty: any `sk_test_...` key, as a fresh test account would.
    api_keys: tuple[str, ...] = ()
    webhook_url: str | None = None
    webhook_secret: str | None = None
    # How long an ACH debit (and an ACH refund) stays pending before it settles by itself;
    # negative: only POST /sandbox/payment_intents/{id}/settle settles it.
    ach_seconds: float = 5.0
    # Attempts per webhook delivery and the first pause between them (doubling each time).
    webhook_attempts: int = 5
    webhook_backoff_seconds: float = 0.5
    accounts: tuple[str, ...] = DEFAULT_ACCOUNTS
    api_version: str = API_VERSION

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StripeSandboxSettings:
        env = os.environ if environ is None else environ

        def listed(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
            raw = env.get(name)
            if raw is None:
                return default
            return tuple(item.strip() for item in raw.split(",") if item.strip())

        return cls(
            host=env.get("STRIPE_SANDBOX_HOST", cls.host),
            port=int(env.get("STRIPE_SANDBOX_PORT", str(cls.port))),
            public_url=(env.get("STRIPE_SANDBOX_PUBLIC_URL") or "").rstrip("/") or None,
            api_keys=listed("STRIPE_SANDBOX_API_KEYS", ()),
            webhook_url=env.get("STRIPE_SANDBOX_WEBHOOK_URL") or None,
            webhook_secret=env.get("STRIPE_SANDBOX_WEBHOOK_SECRET") or None,
            ach_seconds=float(env.get("STRIPE_SANDBOX_ACH_SECONDS", str(cls.ach_seconds))),
            webhook_attempts=int(
                env.get("STRIPE_SANDBOX_WEBHOOK_ATTEMPTS", str(cls.webhook_attempts))
            ),
            webhook_backoff_seconds=float(
                env.get("STRIPE_SANDBOX_WEBHOOK_BACKOFF", str(cls.webhook_backoff_seconds))
            ),
            accounts=listed("STRIPE_SANDBOX_ACCOUNTS", DEFAULT_ACCOUNTS),
            api_version=env.get("STRIPE_SANDBOX_API_VERSION", cls.api_version),
        )
