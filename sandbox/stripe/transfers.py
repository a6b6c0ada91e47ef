"""Connect transfers ("separate charges and transfers") and their reversals.

A transfer with `source_transaction` is funded by that charge and may not exceed what is left
of it; without one it draws on the platform balance. A refund does not touch transfers: the
platform reverses them itself, up to each transfer's amount.
"""

from __future__ import annotations

from sandbox.stripe import forms, objects
from sandbox.stripe.errors import StripeError, invalid_param, no_such
from sandbox.stripe.forms import Params
from sandbox.stripe.objects import Obj
from sandbox.stripe.state import SandboxState

TRANSFER_PARAMS = (
    "amount",
    "currency",
    "destination",
    "source_transaction",
    "transfer_group",
    "metadata",
    "description",
    "expand",
)
REVERSAL_PARAMS = ("amount", "metadata", "description", "refund_application_fee", "expand")


def create_transfer(state: SandboxState, params: Params) -> Obj:
    forms.reject_unknown(params, TRANSFER_PARAMS)
    amount = forms.integer(params, "amount", required=True, minimum=1)
    currency = (forms.text(params, "currency", required=True) or "").lower()
    destination = forms.text(params, "destination", required=True) or ""
    assert amount is not None
    account = state.get("account", destination)
    if account is None:
        raise no_such("destination", destination, param="destination", status=400)
    source = forms.text(params, "source_transaction")
    if source is not None:
        _check_source(state, source, amount, currency)
    elif amount > platform_balance(state, currency):
        raise StripeError(
            400,
            "You have insufficient available funds in your Stripe account. Try adding funds "
            "directly to your available balance by creating Charges using the "
            "4000000000000077 test card.",
            code="balance_insufficient",
        )
    fields = {
        "metadata": forms.metadata(params),
        "description": forms.text(params, "description"),
        "source_transaction": source,
        "transfer_group": forms.text(params, "transfer_group"),
    }
    transfer = objects.transfer(
        amount=amount,
        currency=currency,
        destination=destination,
        created=state.now(),
        fields=fields,
    )
    transfer["balance_transaction"] = _book(state, transfer["id"], -amount, currency, "transfer")
    state.add(transfer)
    state.balances[destination] = state.balances.get(destination, 0) + amount
    state.emit("transfer.created", transfer)
    return transfer


def _check_source(state: SandboxState, source: str, amount: int, currency: str) -> None:
    charge = state.get("charge", source)
    if charge is None:
        raise no_such("charge", source, param="source_transaction", status=400)
    if charge["status"] not in ("succeeded", "pending"):
        raise invalid_param("source_transaction", f"The source transaction {source} has failed.")
    if charge["currency"] != currency:
        raise invalid_param(
            "currency",
            f"The currency of source_transaction's balance transaction ({charge['currency']}) "
            f"must be the same as the transfer currency ({currency}).",
        )
    already = sum(
        transfer["amount"]
        for transfer in state.all("transfer")
        if transfer["source_transaction"] == source
    )
    if already + amount > charge["amount"]:
        raise StripeError(
            400,
            f"Insufficient funds in source transaction {source}: {charge['amount'] - already} "
            f"left, {amount} requested.",
            code="balance_insufficient",
            param="amount",
        )


def platform_balance(state: SandboxState, currency: str) -> int:
    return sum(
        txn["net"] for txn in state.all("balance_transaction") if txn["currency"] == currency
    )


def _book(state: SandboxState, source: str, amount: int, currency: str, kind: str) -> str:
    txn = objects.balance_transaction(
        created=state.now(),
        amount=amount,
        currency=currency,
        fee=0,
        source=source,
        type_=kind,
        category=kind,
    )
    return str(state.add(txn)["id"])


def get_transfer(state: SandboxState, transfer_id: str) -> Obj:
    transfer = state.get("transfer", transfer_id)
    if transfer is None:
        raise no_such("transfer", transfer_id, param="id")
    return transfer


def reverse_transfer(state: SandboxState, transfer_id: str, params: Params) -> Obj:
    forms.reject_unknown(params, REVERSAL_PARAMS)
    transfer = get_transfer(state, transfer_id)
    remaining = transfer["amount"] - transfer["amount_reversed"]
    if remaining == 0:
        raise invalid_param("amount", f"Transfer {transfer_id} has already been fully reversed.")
    amount = forms.integer(params, "amount", minimum=1)
    amount = remaining if amount is None else amount
    if amount > remaining:
        raise invalid_param(
            "amount",
            f"Transfer reversal amount ({amount}) is greater than the transfer amount "
            f"remaining ({remaining}).",
            "amount_too_large",
        )
    reversal = objects.transfer_reversal(
        transfer_obj=transfer,
        amount=amount,
        created=state.now(),
        fields={"metadata": forms.metadata(params)},
    )
    reversal["balance_transaction"] = _book(
        state, reversal["id"], amount, transfer["currency"], "transfer_refund"
    )
    state.add(reversal)
    transfer["amount_reversed"] += amount
    transfer["reversed"] = transfer["amount_reversed"] == transfer["amount"]
    transfer["reversals"]["data"].insert(0, reversal)
    destination = transfer["destination"]
    state.balances[destination] = state.balances.get(destination, 0) - amount
    state.emit("transfer.reversed", transfer)
    return reversal
