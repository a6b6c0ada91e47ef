"""`python -m services.gateway [serve|migrate|create-user]`"""

from __future__ import annotations

import argparse
import asyncio
import sys

from services.gateway.app import MIGRATIONS, create_app, create_service
from services.gateway.firms import ensure_firm_user
from services.gateway.settings import GatewaySettings
from shared.migrations import upgrade
from shared.runtime import configure_logging, main

settings = GatewaySettings()


async def create_user(args: argparse.Namespace) -> None:
    service = create_service(settings)
    async with service.sessionmaker() as s, s.begin():
        firm, user, created = await ensure_firm_user(
            service,
            s,
            firm_id=args.firm_id,
            firm_name=args.firm,
            email=args.email,
            password=args.password,
            user_name=args.name,
            firm_fields={
                "email": args.firm_email,
                "phone": args.firm_phone,
                "address": args.firm_address,
            },
        )
    # The firm.updated event waits in the outbox; the gateway's relay publishes it.
    await service.engine.dispose()
    print(f"{'created' if created else 'exists'}: {user.email} in firm {firm.name} ({firm.id})")


if len(sys.argv) > 1 and sys.argv[1] == "create-user":
    parser = argparse.ArgumentParser(prog="python -m services.gateway create-user")
    parser.add_argument("command")
    parser.add_argument("--email", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--name", default="Firm user")
    parser.add_argument("--firm", default="My Law Firm")
    parser.add_argument("--firm-id", default=None)
    parser.add_argument("--firm-email", default=None)
    parser.add_argument("--firm-phone", default=None)
    parser.add_argument("--firm-address", default=None)
    configure_logging(settings.log_level)
    upgrade(MIGRATIONS, settings.database_url)
    asyncio.run(create_user(parser.parse_args()))
else:
    main(settings, MIGRATIONS, lambda: create_app(settings))
