"""The firms of the other regions: small, so connecting there shows something of its own.

Ids start 100, 200 and 300 million above the US demo firm's, so a record fetched from the
wrong region is a 404, never another firm's record.
"""

from __future__ import annotations

from sandbox.clio.seed import DEMO_FIRM, BillSeed, ClientSeed, FirmSeed


def _small_firm(
    name: str, user: tuple[str, str, str], clients: tuple[tuple[str, str, str], ...], offset: int
) -> FirmSeed:
    """A firm of a few clients, each with an unpaid bill, a paid one and a trust request."""
    seeds = tuple(
        ClientSeed(
            contact={"type": "Company", "name": client, "primary_email_address": email},
            matters=(matter,),
            bills=(
                BillSeed("awaiting_payment", 7 + 5 * index, items=3),
                BillSeed("awaiting_payment", 4 + index, kind="trust_kind", items=1),
                BillSeed("paid", 40 + 3 * index, items=2),
            ),
        )
        for index, (client, email, matter) in enumerate(clients)
    )
    return FirmSeed(
        name=name,
        clients=seeds,
        non_client={"type": "Company", "name": f"{name} (opposing counsel)", "is_client": False},
        user=user,
        bank=f"{name.split()[0]} Bank",
        id_offset=offset,
    )


REGION_FIRMS: dict[str, FirmSeed] = {
    "us": DEMO_FIRM,
    "ca": _small_firm(
        "Maple Legal LLP",
        ("Avery", "Tremblay", "avery.tremblay@example.com"),
        (
            ("Laurentian Timber Ltd.", "ap.laurentian@example.com", "Supply contract review"),
            ("Fraser Valley Dairy", "office.fraserdairy@example.com", "Employment matters"),
        ),
        100_000_000,
    ),
    "eu": _small_firm(
        "Rhein & Partner Rechtsanwälte",
        ("Lena", "Vogel", "lena.vogel@example.com"),
        (
            ("Nordlicht Energie GmbH", "buchhaltung.nordlicht@example.com", "Grid permit"),
            ("Café Amsel", "hallo.amsel@example.com", "Lease renewal"),
        ),
        200_000_000,
    ),
    "au": _small_firm(
        "Harbour Lane Lawyers",
        ("Mia", "Nguyen", "mia.nguyen@example.com"),
        (
            ("Coral Coast Tours Pty Ltd", "accounts.coralcoast@example.com", "Licensing"),
            ("Banksia Build Co.", "admin.banksia@example.com", "Construction dispute"),
        ),
        300_000_000,
    ),
}


def firm_for(region: str) -> FirmSeed:
    return REGION_FIRMS[region]
