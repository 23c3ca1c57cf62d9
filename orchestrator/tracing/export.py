"""Where a process's spans and metrics go: ``configure`` installs its tracer and meter providers."""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry import metrics, trace


def configure(
    *,
    service_name: str = "caduceus",
    otlp_endpoint: str | None = None,
    prometheus: bool = False,
    export_interval_s: float = 15.0,
) -> Callable[[], None]:
    """Install this process's tracer and meter providers; returns their shutdown.

    With ``otlp_endpoint`` (the chart wires the collector's gRPC port), spans and metrics go there over
    OTLP, spans batched every ``export_interval_s`` at most, metrics pushed as often; the collector
    serves the metrics to Prometheus. With ``prometheus`` the metrics are also registered in
    ``prometheus_client``'s default registry (``serve_metrics`` serves it over HTTP).
    """
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter  # noqa: PLC0415
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
    from opentelemetry.exporter.prometheus import PrometheusMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    resource = Resource.create({"service.name": service_name})
    readers: list[MetricReader] = []
    tracer_provider = SdkTracerProvider(resource=resource)
    if otlp_endpoint:
        insecure = otlp_endpoint.startswith("http://")
        exporter = OTLPMetricExporter(endpoint=otlp_endpoint, insecure=insecure)
        readers.append(
            PeriodicExportingMetricReader(exporter, export_interval_millis=export_interval_s * 1000)
        )
        span_exporter = OTLPSpanExporter(endpoint=otlp_endpoint, insecure=insecure)
        delay_ms = min(5000.0, export_interval_s * 1000)
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter, schedule_delay_millis=delay_ms))
    if prometheus:
        readers.append(PrometheusMetricReader())
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    metrics.set_meter_provider(meter_provider)
    trace.set_tracer_provider(tracer_provider)

    def shutdown() -> None:
        meter_provider.shutdown()
        tracer_provider.shutdown()

    return shutdown


def serve_metrics(host: str = "127.0.0.1", port: int = 0) -> tuple[Callable[[], None], int]:
    """prometheus_client's default registry (where ``configure(prometheus=True)`` puts the metrics) over
    HTTP on ``host:port`` (0: a free port); returns its stop and the port."""
    from prometheus_client import start_http_server  # noqa: PLC0415

    server, thread = start_http_server(port, addr=host)
    bound = int(server.server_address[1])

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

    return stop, bound
