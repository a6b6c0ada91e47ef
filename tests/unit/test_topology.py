"""The declared topology matches what each service actually consumes."""

from __future__ import annotations

import pytest

from shared.bus import queue_name
from shared.topology import SUBSCRIPTIONS


@pytest.mark.parametrize("name", ["envelope", "mailer", "payments", "sync", "gateway"])
def test_each_service_consumes_exactly_what_the_topology_declares(name: str) -> None:
    module = __import__(f"services.{name}.app", fromlist=["create_app"])
    app = module.create_app()
    bus = app.state.service.bus
    consumed = set(bus._dead_letter_routes)
    declared = {
        queue_name(bus.exchange.name, name, ev.routing_key) for ev in SUBSCRIPTIONS.get(name, ())
    }
    assert consumed == declared
