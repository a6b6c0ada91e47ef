"""What every service needs and nothing more: event contracts, bus topology, outbox and
inbox, database sessions, settings, telemetry, money. No business rules live here."""
