"""Optional OpenTelemetry tracing (gateway/tracing.py): a span per request reaches a real OTLP/HTTP
collector on loopback with the request's model, team, status, tokens and first-token time."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tests.conftest import gateway_config, sdk

trace_pb2 = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")


def attributes(span) -> dict:
    out = {}
    for kv in span.attributes:
        v = kv.value
        out[kv.key] = v.string_value or v.int_value or v.bool_value
    return out


async def test_a_span_per_request_reaches_an_otlp_collector(engines, gateway_factory, loopback_receiver) -> None:
    spans: list = []

    async def collect(request: web.Request) -> web.Response:
        export = trace_pb2.ExportTraceServiceRequest.FromString(await request.read())
        for rs in export.resource_spans:
            for ss in rs.scope_spans:
                spans.extend((rs.resource, s) for s in ss.spans)
        return web.Response(
            body=trace_pb2.ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    base = await loopback_receiver("/v1/traces", collect)
    raw = gateway_config(engines)
    raw["tracing"] = {"enabled": True, "endpoint": f"{base}/v1/traces", "service_name": "sy-test"}
    gw = await gateway_factory(raw)
    stream = await sdk(gw).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=5, stream=True
    )
    async for _ in stream:
        pass
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    await sdk(gw).chat.completions.create(  # an agent that traces itself: the span joins its trace
        model="chat",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=5,
        extra_headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
    )
    for _ in range(100):  # the batch processor exports every second
        if len(spans) == 2:
            break
        await asyncio.sleep(0.1)
    assert len(spans) == 2
    (resource, span), (_, joined) = spans
    assert joined.trace_id.hex() == trace_id and joined.parent_span_id.hex() == parent_id
    assert span.trace_id.hex() != trace_id and not span.parent_span_id  # no traceparent: a new trace
    assert any(kv.key == "service.name" and kv.value.string_value == "sy-test" for kv in resource.attributes)
    attrs = attributes(span)
    assert attrs["switchyard.model"] == "chat" and attrs["switchyard.team"] == "research"
    assert attrs["http.response.status_code"] == 200 and attrs["switchyard.deployment"].startswith("e")
    assert attrs["gen_ai.usage.output_tokens"] == 5
    assert span.end_time_unix_nano > span.start_time_unix_nano
    assert [e.name for e in span.events] == ["first_token"]
    assert span.start_time_unix_nano <= span.events[0].time_unix_nano <= span.end_time_unix_nano
