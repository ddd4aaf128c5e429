"""Operations: ``/metrics`` (Prometheus text), the ``/ops`` monitor and its live feed.

- ``GET /metrics`` carries only anonymous figures (counts, codecs, timings; transcoders
  are numbered, consultations never named) and is open like any Prometheus target on
  the host unless the operator closes it: ``--metrics-token`` makes a scrape send
  ``Authorization: Bearer <token>``; ``--metrics-listen HOST:PORT`` serves it on its own
  listener only (:func:`metrics_app`), and the web port answers ``404``.
- ``GET /ops`` is the operations monitor page (advisor/ops login, or a bearer advisor
  token): live tables and charts from ``GET /api/ops/live`` (server-sent events, one
  sample a second from ``gateway/monitor.py``; the last minutes first), alarms for a
  transcoder slower than real time or dropping frames, and plots of the anonymous
  statistics (``/api/stats``).
- ``GET /api/ops/snapshot`` (advisor) is the JSON behind them; ``?since=<clock>``
  limits the latency percentiles to samples after an earlier snapshot's ``clock`` (how
  the benchmarks measure a window).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from gateway.latency import METER
from gateway.monitor import short_id
from gateway.service import Gateway
from web.auth import gateway_of, identify, require_advisor
from web.cluster import cluster_of, cluster_section
from web.keys import GATEWAY_KEY
from web.problems import ProblemError, problem_middleware, unauthorized
from web.security import security_headers
from web.templates import View

if TYPE_CHECKING:  # PyAV loads with the transcoders only
    from gateway.transcode.worker import Transcoder

routes = web.RouteTableDef()
REGISTRY_KEY = web.AppKey("metrics_registry", CollectorRegistry)
HTTP_COUNTS_KEY = web.AppKey("http_counts", dict)
LIVE_STOP_KEY = web.AppKey("ops_live_stop", asyncio.Event)
METRICS_LISTENER_KEY = web.AppKey("metrics_listener", bool)
LIVE_INTERVAL = 1.0
TRANSCODER_LABELS = ["transcoder", "direction", "kind", "codec"]


def transcoders_of(gateway: Gateway) -> list[Transcoder]:
    pool = gateway.transcoders
    return pool.transcoders if pool is not None else []


def transcoder_view(transcoder: Transcoder) -> dict[str, Any]:
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


def consultations_view(gateway: Gateway) -> list[dict[str, Any]]:
    """Short ids, how each participant is connected, minutes open: nothing personal."""
    out = []
    for consultation in gateway.directory.consultations.values():
        if consultation.ended:
            continue
        described = {str(r): p.describe() for r, p in consultation.participants.items()}
        out.append(
            {
                "id": short_id(consultation.id),
                "participants": {
                    role: {"via": d["via"], "camera": d["camera"], "microphone": d["microphone"]}
                    for role, d in described.items()
                },
                "created_at": round(consultation.created_at),
                # a telephone leg (docs/phone.md): its codec and direction, no number
                "phone": None
                if consultation.phone is None
                else {"codec": consultation.phone.codec, "direction": consultation.phone.direction},
            }
        )
    return out


def client_kind(via: list[str]) -> str | None:
    """flash / webrtc / chat-only for a participant's connections (None: absent)."""
    if not via:
        return None
    if any(v.startswith("rtmp") for v in via):
        return "flash"
    if "webrtc" in via:
        return "webrtc"
    return "chat-only"


class GatewayCollector(Collector):
    """Read at scrape time: consultations, participants, connections, transcoders."""

    def __init__(self, gateway: Gateway, app: web.Application) -> None:
        self.gateway = gateway
        self.app = app

    def collect(self) -> Iterator[Metric]:
        gateway = self.gateway
        consultations = [c for c in gateway.directory.consultations.values() if not c.ended]
        yield GaugeMetricFamily(
            "vb_consultations", "Consultations open on this node.", value=len(consultations)
        )
        participants = GaugeMetricFamily(
            "vb_participants",
            "Participants present, by client kind (flash, webrtc, chat-only).",
            labels=["client_kind"],
        )
        kinds = {"flash": 0, "webrtc": 0, "chat-only": 0}
        for consultation in consultations:
            for participant in consultation.participants.values():
                kind = client_kind(participant.describe()["via"])
                if kind is not None:
                    kinds[kind] += 1
        for kind, count in kinds.items():
            participants.add_metric([kind], count)
        yield participants
        connections = GaugeMetricFamily(
            "vb_connections",
            "Open connections by front-end: rtmp, rtmps, rtmpt (tunnels), webrtc (peers).",
            labels=["transport"],
        )
        for kind, count in sorted(self._connection_counts().items()):
            connections.add_metric([kind], count)
        yield connections
        http = CounterMetricFamily(
            "vb_http_requests", "HTTP requests answered, by status code.", labels=["status"]
        )
        for status, count in sorted(self.app[HTTP_COUNTS_KEY].items()):
            http.add_metric([str(status)], count)
        yield http
        yield from self._transcoders()
        yield from self._admission()

    def _connection_counts(self) -> dict[str, int]:
        counts = {name: int(count()) for name, count in self.gateway.connection_counters.items()}
        from web.rtmpt import TUNNELS_KEY  # the tunnel table lives with its routes

        tunnels = self.app.get(TUNNELS_KEY)
        if tunnels is not None:
            for tunnel in tunnels:
                transport = str(getattr(tunnel, "transport", "rtmpt"))
                counts[transport] = counts.get(transport, 0) + 1
            counts.setdefault("rtmpt", 0)
        return counts

    def _transcoders(self) -> Iterator[Metric]:
        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=TRANSCODER_LABELS)

        def counter(name: str, doc: str) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, labels=TRANSCODER_LABELS)

        frames_in = counter("vb_transcoder_frames_in", "Units taken by the transcoder.")
        frames_out = counter("vb_transcoder_frames_out", "Units encoded.")
        dropped = counter("vb_transcoder_dropped_frames", "Units dropped (queue full).")
        keyreq = counter("vb_transcoder_keyframe_requests", "Keyframe requests (PLI, drops).")
        busy = counter("vb_transcoder_busy_seconds", "Wall time the worker spent on units.")
        depth = gauge("vb_transcoder_queue_depth", "Units waiting in the transcoder's queue.")
        fps = gauge("vb_transcoder_fps", "Frames (or audio packets) out per second, last second.")
        bitrate = gauge("vb_transcoder_bitrate_bps", "Encoded bits per second, last second.")
        rtf = gauge(
            "vb_transcoder_realtime_factor",
            "Media seconds processed per second of work, last second (< 1: behind).",
        )
        share = gauge("vb_transcoder_cpu_share", "Share of a core the worker used, last second.")
        monitor = self.gateway.monitor
        last = monitor.last if monitor is not None else None
        rows = {row["number"]: row for row in (last or {}).get("transcoders", [])}
        for transcoder in transcoders_of(self.gateway):
            meta = transcoder.labels()
            values = [str(transcoder.number), meta["direction"], meta["kind"], meta["codec"]]
            stats = transcoder.stats
            frames_in.add_metric(values, stats.video_in + stats.audio_in)
            frames_out.add_metric(values, stats.video_out + stats.audio_out)
            dropped.add_metric(values, stats.dropped)
            keyreq.add_metric(values, stats.keyframe_requests)
            busy.add_metric(values, stats.busy_seconds)
            depth.add_metric(values, stats.queue_depth)
            row = rows.get(transcoder.number)
            if row is not None:
                fps.add_metric(values, row["fps"])
                bitrate.add_metric(values, row["bitrate"])
                share.add_metric(values, row["cpu_share"])
                factor = row["realtime_factor"]
                if factor is not None and math.isfinite(factor):
                    rtf.add_metric(values, factor)
        yield from (frames_in, frames_out, dropped, keyreq, busy, depth, fps, bitrate, rtf, share)

    def _admission(self) -> Iterator[Metric]:
        monitor = self.gateway.monitor
        if monitor is None:
            return
        admission = monitor.admission()
        yield GaugeMetricFamily(
            "vb_load_cores", "Cores this process used, last seconds.", value=admission["load_cores"]
        )
        yield GaugeMetricFamily(
            "vb_budget_cores",
            "Cores this process may use before admission refuses new work.",
            value=admission["budget_cores"],
        )
        yield GaugeMetricFamily(
            "vb_accepting_consultations",
            "1 while new consultations are admitted.",
            value=1.0 if admission["accepting_consultations"] else 0.0,
        )
        refused = CounterMetricFamily(
            "vb_admission_refused", "Work refused for want of capacity.", labels=["what"]
        )
        refused.add_metric(["consultation"], admission["refused_consultations"])
        refused.add_metric(["transcoder"], admission["refused_transcoders"])
        yield refused


def build_registry(gateway: Gateway, app: web.Application) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(METER.collector())
    registry.register(GatewayCollector(gateway, app))
    ProcessCollector(registry=registry)
    return registry


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """HTTP requests by status (the outermost middleware: sees problem responses too)."""
    counts = request.app[HTTP_COUNTS_KEY]
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        counts[exc.status] = counts.get(exc.status, 0) + 1
        raise
    except ConnectionError:
        # the client left mid-request (web/problems.py re-raises only that): nginx's 499
        counts[499] = counts.get(499, 0) + 1
        raise
    except Exception:
        counts[500] = counts.get(500, 0) + 1
        raise
    counts[response.status] = counts.get(response.status, 0) + 1
    return response


# -- endpoints ---------------------------------------------------------------------------
@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    config = gateway_of(request).config
    if config.metrics_listen and not request.app.get(METRICS_LISTENER_KEY, False):
        raise ProblemError(404)  # served on --metrics-listen only
    if config.metrics_token:
        sent = request.headers.get("Authorization", "")
        expected = f"Bearer {config.metrics_token}"
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            raise unauthorized(
                "A scrape of /metrics must send the --metrics-token as a bearer token.",
                invalid_token=bool(sent),
            )
    registry = request.app[REGISTRY_KEY]
    body = await asyncio.to_thread(generate_latest, registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _since(request: web.Request) -> float | None:
    if "since" not in request.query:
        return None
    try:
        since = float(request.query["since"])
    except ValueError:
        raise ProblemError(400, "since must be a number (a snapshot's clock).") from None
    if not math.isfinite(since):
        raise ProblemError(400, "since must be a finite number.")
    return since


@routes.get("/api/ops/snapshot")
async def snapshot(request: web.Request) -> web.Response:
    require_advisor(request)
    gateway = gateway_of(request)
    since = _since(request)
    monitor = gateway.monitor
    return web.json_response(
        {
            "consultations": consultations_view(gateway),
            "transcoders": [transcoder_view(t) for t in transcoders_of(gateway)],
            "latency": METER.snapshot(since),
            "admission": monitor.admission() if monitor is not None else None,
            **({"cluster": node.describe()} if (node := cluster_of(request)) else {}),
        }
    )


def _live_payload(gateway: Gateway, sample: dict[str, Any] | None) -> dict[str, Any]:
    return {"sample": sample, "consultations": consultations_view(gateway)}


@routes.get("/api/ops/live")
async def live(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``history`` (the samples kept, oldest first), then one
    ``sample`` a second. The advisor cookie (the /ops page) or a bearer token."""
    require_advisor(request)
    gateway = gateway_of(request)
    monitor = gateway.monitor
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    history = list(monitor.history) if monitor is not None else []
    await response.write(_event("history", {"samples": history}))
    last_at = history[-1]["at"] if history else None
    stop = request.app[LIVE_STOP_KEY]
    with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
        while not stop.is_set():
            sample = monitor.last if monitor is not None else None
            if sample is not None and sample["at"] != last_at:
                last_at = sample["at"]
                await response.write(_event("sample", _live_payload(gateway, sample)))
            elif sample is None:
                await response.write(_event("sample", _live_payload(gateway, None)))
            # the feed ends at shutdown at once (aiohttp waits for running handlers)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LIVE_INTERVAL / 2)
    return response


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@routes.get("/ops")
async def ops_page(request: web.Request) -> web.Response:
    from web.advisor import login_page
    from web.pages import html_response, message_page, view

    principal = identify(request)
    if principal is None:
        # the sign-in form, back to the monitor afterwards
        return login_page(
            request,
            status=401,
            message="ops.denied.text",
            next_path="/ops",
            title_key="ops.denied.title",
        )
    if not principal.advisor:
        return message_page(request, "ops.denied.title", "ops.denied.text", status=403)
    extra = ""
    node = cluster_of(request)
    if node is not None:  # cluster mode: the nodes (docs/cluster.md)
        from web.auth import csrf_token

        sid = principal.cookie_session
        extra = cluster_section(view(request), node, csrf_token(request.app, sid) if sid else None)
    return html_response(request, ops_monitor(view(request), extra))


def _chart(v: View, name: str) -> str:
    return (
        f'<figure class="ops-chart"><figcaption>{v.tr(f"ops.chart.{name}")}</figcaption>'
        f'<canvas id="chart-{name}" width="480" height="160" role="img" '
        f"{v.attr('aria-label', f'ops.chart.{name}')}></canvas></figure>"
    )


def ops_monitor(v: View, cluster: str = "") -> str:
    """The page skeleton; web/static/ops.js fills it from the live feed."""
    summary = "".join(
        f'<div><dt>{v.tr(f"ops.summary.{key}")}</dt><dd id="sum-{key}">–</dd></div>'
        for key in ("cpu", "memory", "consultations", "transcoders", "admission")
    )
    columns = (
        "number", "consultation", "direction", "codec", "fps", "bitrate",
        "rtf", "cpu", "queue", "dropped", "keyframes",
    )  # fmt: skip
    heads = "".join(v.tr(f"ops.col.{c}", "th", 'scope="col"') for c in columns)
    none = v.tr("ops.none", "p", 'id="no-transcoders"')
    cheads = "".join(
        v.tr(f"ops.ccol.{c}", "th", 'scope="col"') for c in ("id", "advisor", "customer", "since")
    )
    main = (
        '<section class="card ops-summary"><dl class="ops-figures">' + summary + "</dl>"
        f'<p id="ops-state" class="muted">{v.tr("ops.connecting")}</p></section>'
        + cluster
        + '<section class="card ops-alarms" id="ops-alarms" role="alert" aria-live="assertive" '
        f'hidden>{v.tr("ops.alarms", "h2")}<ul id="alarm-list"></ul></section>'
        f'<section class="card">{v.tr("ops.transcoders", "h2")}'
        f'<div class="table-wrap"><table id="ops-transcoders"><thead><tr>{heads}</tr>'
        f"</thead><tbody></tbody></table></div>{none}"
        "</section>"
        f'<section class="card">{v.tr("ops.consultations", "h2")}'
        f'<div class="table-wrap"><table id="ops-consultations"><thead><tr>{cheads}</tr>'
        "</thead><tbody></tbody></table></div></section>"
        f'<section class="card">{v.tr("ops.live", "h2")}<div class="ops-charts">'
        + "".join(_chart(v, name) for name in ("fps", "bitrate", "latency", "cpu"))
        + "</div></section>"
        f'<section class="card">{v.tr("ops.statistics", "h2")}<div class="ops-charts">'
        + "".join(_chart(v, name) for name in ("per_day", "durations", "clients"))
        + f'</div><p><a class="link" href="/api/stats?format=csv">{v.tr("ops.csv")}</a></p>'
        "</section>"
    )
    return v.document(
        "ops.title", main, scripts=("i18n.js", "ops.js"), body_class="page-ops", live_language=True
    )


async def _stop_live_feeds(app: web.Application) -> None:
    app[LIVE_STOP_KEY].set()


def setup(app: web.Application) -> None:
    app[HTTP_COUNTS_KEY] = {}
    app[LIVE_STOP_KEY] = asyncio.Event()
    app.on_shutdown.append(_stop_live_feeds)
    app[REGISTRY_KEY] = build_registry(app[GATEWAY_KEY], app)
    app.middlewares.insert(0, count_requests)
    app.add_routes(routes)


def metrics_app(main: web.Application) -> web.Application:
    """The application of the ``--metrics-listen`` listener: ``/metrics`` only, from the
    same registry as the web port's application (set up first)."""
    app = web.Application(middlewares=[problem_middleware])
    app[GATEWAY_KEY] = main[GATEWAY_KEY]
    app[REGISTRY_KEY] = main[REGISTRY_KEY]
    app[METRICS_LISTENER_KEY] = True
    app.on_response_prepare.append(security_headers)
    app.router.add_get("/metrics", metrics)
    return app
