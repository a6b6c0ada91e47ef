"""OpenTelemetry for every service: FastAPI, httpx, SQLAlchemy and the FastStream middleware.

Spans are recorded and exported by OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set. Without
it nothing would ever read them, so none is recorded: spans are then sampled out, which
still gives each request and message a trace id and passes it on between services (in the
logs and the events' headers), without building span objects for every SQL statement,
message and request.
"""

from __future__ import annotations

import logging
import os

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)


def make_provider(service_name: str, otlp_endpoint: str | None) -> TracerProvider:
    provider = TracerProvider(
        resource=Resource.create(
            {
                "service.name": os.environ.get("OTEL_SERVICE_NAME", service_name),
                "service.namespace": "envelopepay",
            }
        ),
        sampler=ParentBased(ALWAYS_ON) if otlp_endpoint else ALWAYS_OFF,
    )
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=otlp_endpoint.rstrip("/") + "/v1/traces")
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
        log.info("tracing: exporting spans to %s", otlp_endpoint)
    return provider


def setup_tracing(service_name: str, otlp_endpoint: str | None) -> TracerProvider:
    provider = make_provider(service_name, otlp_endpoint)
    trace.set_tracer_provider(provider)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    return provider


def instrument_app(app: FastAPI, provider: TracerProvider) -> None:
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, excluded_urls="health/live,health/ready,static/.*"
    )


def instrument_engine(engine: AsyncEngine, provider: TracerProvider) -> None:
    SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine, tracer_provider=provider)


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else None
