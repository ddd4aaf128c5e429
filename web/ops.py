"""Operations endpoints: ``/metrics`` (Prometheus text) and the JSON snapshot behind them.

``GET /metrics`` carries only anonymous figures (counts, codecs, timings; transcoders
are numbered, consultations never named) and is open like any Prometheus target on the
host; ``GET /api/ops/snapshot`` adds short consultation ids and needs an advisor
(bearer or cookie). ``?since=<clock>`` limits the latency percentiles to samples after
an earlier snapshot's ``clock`` (how the benchmarks measure a window).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from gateway.latency import METER
from gateway.service import Gateway
from web.auth import gateway_of, require_advisor
from web.keys import GATEWAY_KEY
from web.problems import ProblemError

routes = web.RouteTableDef()
REGISTRY_KEY = web.AppKey("metrics_registry", CollectorRegistry)
SHORT_ID = 6  # characters of a consultation id shown to operators


def short_id(consultation_id: str) -> str:
    return consultation_id[:SHORT_ID]


def transcoders_of(gateway: Gateway) -> list[Any]:
    pool = gateway.transcoders
    return list(getattr(pool, "transcoders", ()))


def transcoder_view(transcoder: Any) -> dict[str, Any]:
    stats = transcoder.stats
    view = {
        "number": transcoder.number,
        "consultation": short_id(transcoder.source.name.split("/", 1)[0]),
        **transcoder.labels(),
        "alive": transcoder.alive,
        "video_bitrate": transcoder.video_bitrate if transcoder.target.video else None,
    }
    view.update(stats.snapshot())
    view["last_error"] = None if stats.last_error is None else "yes"  # no payload details
    return view


class GatewayCollector(Collector):
    """Read at scrape time: consultations, participants, transcoders."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        consultations = [c for c in self.gateway.directory.consultations.values() if not c.ended]
        yield GaugeMetricFamily(
            "vb_consultations", "Consultations open on this node.", value=len(consultations)
        )
        by_kind = GaugeMetricFamily(
            "vb_connections",
            "Participant connections by kind (rtmp, rtmpt, rtmps, webrtc, events).",
            labels=["kind"],
        )
        counts: dict[str, int] = {}
        for consultation in consultations:
            for participant in consultation.participants.values():
                for connection in participant.connections:
                    counts[connection.kind] = counts.get(connection.kind, 0) + 1
        for kind, count in sorted(counts.items()):
            by_kind.add_metric([kind], count)
        yield by_kind
        yield from self._transcoders()

    def _transcoders(self) -> Iterator[Metric]:
        labels = ["transcoder", "direction", "kind", "codec"]

        def family(cls: type, name: str, doc: str) -> Any:
            return cls(name, doc, labels=labels)

        frames_in = family(CounterMetricFamily, "vb_transcoder_frames_in", "Units decoded.")
        frames_out = family(CounterMetricFamily, "vb_transcoder_frames_out", "Units encoded.")
        dropped = family(
            CounterMetricFamily, "vb_transcoder_dropped_frames", "Units dropped (queue full)."
        )
        keyreq = family(
            CounterMetricFamily, "vb_transcoder_keyframe_requests", "Keyframe requests (PLI)."
        )
        depth = family(GaugeMetricFamily, "vb_transcoder_queue_depth", "Units waiting.")
        rtf = family(
            GaugeMetricFamily,
            "vb_transcoder_realtime_factor",
            "Media seconds processed per second of work (< 1: slower than real time).",
        )
        decode = family(CounterMetricFamily, "vb_transcoder_decode_seconds", "Time spent decoding.")
        encode = family(CounterMetricFamily, "vb_transcoder_encode_seconds", "Time spent encoding.")
        for transcoder in transcoders_of(self.gateway):
            meta = transcoder.labels()
            values = [str(transcoder.number), meta["direction"], meta["kind"], meta["codec"]]
            stats = transcoder.stats
            frames_in.add_metric(values, stats.video_in + stats.audio_in)
            frames_out.add_metric(values, stats.video_out + stats.audio_out)
            dropped.add_metric(values, stats.dropped)
            keyreq.add_metric(values, stats.keyframe_requests)
            depth.add_metric(values, stats.queue_depth)
            factor = stats.realtime_factor
            rtf.add_metric(values, factor if math.isfinite(factor) else 0.0)
            decode.add_metric(values, stats.decode_seconds)
            encode.add_metric(values, stats.encode_seconds)
        yield from (frames_in, frames_out, dropped, keyreq, depth, rtf, decode, encode)


def build_registry(gateway: Gateway) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(METER.collector())
    registry.register(GatewayCollector(gateway))
    ProcessCollector(registry=registry)
    return registry


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY_KEY]
    body = generate_latest(registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/api/ops/snapshot")
async def snapshot(request: web.Request) -> web.Response:
    require_advisor(request)
    gateway = gateway_of(request)
    since: float | None = None
    if "since" in request.query:
        try:
            since = float(request.query["since"])
        except ValueError:
            raise ProblemError(400, "since must be a number (a snapshot's clock).") from None
        if not math.isfinite(since):
            raise ProblemError(400, "since must be a finite number.")
    consultations = [
        {
            "id": short_id(c.id),
            "participants": {str(r): p.describe()["via"] for r, p in c.participants.items()},
        }
        for c in gateway.directory.consultations.values()
        if not c.ended
    ]
    return web.json_response(
        {
            "consultations": consultations,
            "transcoders": [transcoder_view(t) for t in transcoders_of(gateway)],
            "latency": METER.snapshot(since),
        }
    )


def setup(app: web.Application) -> None:
    app[REGISTRY_KEY] = build_registry(app[GATEWAY_KEY])
    app.add_routes(routes)
