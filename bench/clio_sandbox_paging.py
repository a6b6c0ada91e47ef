"""How long a full paging of a big Clio sandbox firm takes (rate limit off, in-process).

    .venv/bin/python bench/clio_sandbox_paging.py [--bills 10000] [--lines 5]
        [--clients 500] [--trust-every 0]

Builds the firm with `POST /sandbox/bulk`, then pages every bill, line item and contact
with the fields a sync asks for, and prints the time and pages of each listing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sandbox.clio import SandboxSettings, SandboxState, create_app  # noqa: E402

LISTINGS = (
    (
        "bills",
        "/api/v4/bills.json",
        "id,etag,number,state,kind,type,issued_at,due_at,total,paid,balance,updated_at,"
        "client{id,name,primary_email_address},matters{id,display_number}",
    ),
    (
        "line items",
        "/api/v4/line_items.json",
        "id,etag,kind,description,quantity,price,total,date,bill{id}",
    ),
    ("contacts", "/api/v4/contacts.json", "id,etag,name,primary_email_address,updated_at"),
)


async def page_all(http: httpx.AsyncClient, path: str, fields: str) -> tuple[int, int]:
    response = await http.get(path, params={"fields": fields, "limit": 200})
    records = pages = 0
    while True:
        response.raise_for_status()
        body = response.json()
        records += len(body["data"])
        pages += 1
        next_url = body["meta"]["paging"].get("next")
        if next_url is None:
            return records, pages
        response = await http.get(next_url)


async def main(bills: int, lines: int, clients: int, trust_every: int) -> None:
    state = SandboxState(settings=SandboxSettings(rate_limit=0))
    transport = httpx.ASGITransport(app=create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://clio.test") as http:
        started = time.perf_counter()
        trust = {"trust_every": trust_every} if trust_every else {}
        built = await http.post(
            "/sandbox/bulk",
            json={"bills": bills, "lines_per_bill": lines, "clients": clients, **trust},
        )
        built.raise_for_status()
        print(f"bulk: {built.json()} in {time.perf_counter() - started:.2f} s")
        token = (await http.post("/sandbox/tokens")).json()["access_token"]
        http.headers["Authorization"] = f"Bearer {token}"
        for name, path, fields in LISTINGS:
            started, cpu = time.perf_counter(), time.process_time()
            records, pages = await page_all(http, path, fields)
            elapsed, used = time.perf_counter() - started, time.process_time() - cpu
            print(
                f"{name}: {records} records, {pages} pages in {elapsed:.2f} s wall, "
                f"{used:.2f} s CPU ({used / pages * 1000:.1f} ms CPU a page)"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bills", type=int, default=10_000)
    parser.add_argument("--lines", type=int, default=5)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--trust-every", type=int, default=0, help="0: no trust requests")
    args = parser.parse_args()
    asyncio.run(main(args.bills, args.lines, args.clients, args.trust_every))
