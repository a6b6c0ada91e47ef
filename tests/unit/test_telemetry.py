"""Tracing: spans are recorded only where they are exported; trace ids flow either way."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from shared.telemetry import make_provider


def test_without_an_exporter_spans_are_not_recorded_but_the_trace_id_flows() -> None:
    tracer = make_provider("envelope", None).get_tracer("test")
    with tracer.start_as_current_span("handle email.sent") as span:
        assert span.is_recording() is False
        context = span.get_span_context()
        assert context.is_valid  # a trace id for the logs and the next service
        carrier: dict[str, str] = {}
        inject(carrier)
    assert carrier["traceparent"].split("-")[1] == f"{context.trace_id:032x}"

    # The next service, also without an exporter, continues the same trace.
    downstream = make_provider("mailer", None).get_tracer("test")
    with downstream.start_as_current_span("send", context=extract(carrier)) as child:
        assert child.get_span_context().trace_id == context.trace_id
        assert child.is_recording() is False


def test_with_an_exporter_spans_are_recorded_and_follow_their_parent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exported: list[str] = []

    def export(self: OTLPSpanExporter, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        exported.extend(span.name for span in spans)
        return SpanExportResult.SUCCESS

    monkeypatch.setattr(OTLPSpanExporter, "export", export)
    provider = make_provider("envelope", "http://collector.invalid:4318")
    try:
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("root") as root:
            assert root.is_recording() is True
            carrier: dict[str, str] = {}
            inject(carrier)
        with tracer.start_as_current_span("child", context=extract(carrier)) as child:
            assert child.get_span_context().trace_id == root.get_span_context().trace_id
            assert child.is_recording() is True
        # A caller that sampled its trace out is followed: nothing recorded here either.
        unsampled = {"traceparent": carrier["traceparent"][:-2] + "00"}
        with tracer.start_as_current_span("late", context=extract(unsampled)) as late:
            assert late.is_recording() is False
            assert trace.get_current_span() is late
    finally:
        provider.shutdown()  # flushes what was recorded to the exporter
    assert exported == ["root", "child"]
