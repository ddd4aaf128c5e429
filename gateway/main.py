"""Composition root: ``python -m gateway serve`` wires the core to its front-ends.

This is the only module of ``gateway/`` that imports ``rtmp``, ``webrtc`` and ``web``
(docs/architecture.md, "The dependency rule").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import resource
import signal
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from gateway.cluster import ClusterNode
    from rtmp.session import RtmpShared
    from web.guard import ConnectionGuard
    from web.whip import WebRtcService

from gateway import advisor_cli, logs
from gateway import config as config_mod
from gateway.accesslog import AccessLog, purge_daily
from gateway.config import Config
from gateway.forms import TemplateError
from gateway.monitor import Monitor
from gateway.service import Gateway
from gateway.transcode import TranscoderPool

log = logging.getLogger("gateway")

SWEEP_INTERVAL = 5.0
MONITOR_INTERVAL = 1.0
# Descriptors beyond the connection caps: files (documents, statistics, logs), WebRTC's
# UDP sockets (several per peer), ffmpeg pipes, the listeners themselves.
FD_RESERVE = 1024


class DescriptorLimitError(OSError):
    """The process may not open enough files for the configured connection caps."""


def descriptors_needed(cfg: Config) -> int:
    """File descriptors the caps can use at once: every HTTP connection, every RTMP
    connection (RTMPS is a second listener with its own count), and a reserve."""
    limits = cfg.limits
    rtmp_listeners = 2 if cfg.tls else 1
    return limits.http_max_connections + rtmp_listeners * limits.max_connections + FD_RESERVE


def raise_descriptor_limit(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (the kernel's default soft limit,
    often 1024, is below what the caps allow) and refuse to start when even the hard
    limit is below ``needed``: running out of descriptors fails everyone at once (new
    HTTP and RTMP connections, file writes), so the caps must be hit first. Returns the
    new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise DescriptorLimitError(
            f"the open-files limit is {soft}, but the connection caps need {needed} "
            f"(http_max_connections + max_connections per RTMP listener + {FD_RESERVE}): "
            "raise it (ulimit -n, systemd LimitNOFILE=) or lower the caps with "
            "--limit http_max_connections=N --limit max_connections=N"
        )
    log.info("open-files limit %d (the connection caps need %d)", soft, needed)
    return int(soft)


def make_ssl_context(cfg: Config) -> ssl.SSLContext | None:
    """One server context for HTTPS/WSS/RTMPTS and native RTMPS (rtmp/server.py)."""
    if not cfg.tls:
        return None
    from rtmp.server import server_tls_context

    assert cfg.tls_cert is not None and cfg.tls_key is not None
    return server_tls_context(cfg.tls_cert, cfg.tls_key, cfg.tls_min_version)


def build_gateway(cfg: Config) -> Gateway:
    """The core as it runs: consultations, the one transcoder pool (shared by RTMP players,
    WHEP receivers and every later front-end, through gateway.routing.connect) and the
    monitor that admits new transcoders. Nothing is opened or started: the service opens
    storage, in-process tests use it as it is."""
    gateway = Gateway.from_config(cfg)
    limits = cfg.limits
    pool: TranscoderPool  # the monitor reads the pool it admits for (made just below)
    monitor = Monitor(
        lambda: pool.transcoders,
        cpu_budget=limits.cpu_budget,
        consultation_cost=limits.consultation_cost,
        transcoding_consultations=lambda: len(
            {t.source.name.split("/", 1)[0] for t in pool.transcoders}
        ),
    )
    pool = TranscoderPool(admit=monitor.check_new_transcoder)
    gateway.monitor = monitor
    gateway.transcoders = pool
    return gateway


def join_cluster(gateway: Gateway) -> ClusterNode:
    """This node's membership (``--redis``): its URLs from the configuration, its load
    from the monitor that admission control uses (docs/cluster.md)."""
    from gateway.cluster import ClusterNode, NodeInfo
    from web.links import rtmp_app_url

    cfg = gateway.config
    base = cfg.base_url()
    info = NodeInfo(
        id=cfg.node_id or f"{cfg.host}:{cfg.http_port}",
        url=base,
        rtmp=rtmp_app_url(cfg),
        internal=(cfg.node_url or base).rstrip("/"),
    )
    node = ClusterNode(gateway, redis_url=str(cfg.redis), info=info)
    monitor = gateway.monitor
    if monitor is not None:
        node.load_source = lambda: (
            monitor.load(),
            monitor.consultation_cost(),
            monitor.budget_cores(),
        )
    gateway.cluster = node
    return node


def build_app(
    gateway: Gateway,
    webrtc: WebRtcService | None = None,
    rtmp: RtmpShared | None = None,
    *,
    client_max_size: int | None = None,
) -> web.Application:
    """The web application with every route module and the WHIP/WHEP handlers on
    ``webrtc`` (by default a :class:`webrtc.frontend.WebRtcFrontEnd` of ``gateway``, closed
    with the app) and the RTMPT tunnel, whose sessions share ``rtmp`` with the RTMP servers
    (by default a new :class:`rtmp.session.RtmpShared`; ``client_max_size``:
    :func:`web.app.create_app`'s). The service and the
    in-process tests build their app here, so both run the same composition."""
    from rtmp.session import RtmpShared
    from web import rtmpt, whip
    from web.app import CLIENT_MAX_SIZE, DEFAULT_SETUPS, create_app

    if webrtc is None:
        from webrtc.frontend import WebRtcFrontEnd

        webrtc = WebRtcFrontEnd(gateway)
    if rtmp is None:
        rtmp = RtmpShared(gateway.config.limits)
    return create_app(
        gateway,
        setups=[*DEFAULT_SETUPS, rtmpt.routes(rtmp), whip.routes(webrtc)],
        client_max_size=CLIENT_MAX_SIZE if client_max_size is None else client_max_size,
    )


class Service:
    """The running gateway: web app, RTMP (and RTMPS) servers, housekeeping."""

    def __init__(self, cfg: Config) -> None:
        from rtmp.session import RtmpShared
        from webrtc.frontend import WebRtcFrontEnd

        self.config = cfg
        self.gateway = build_gateway(cfg)
        # documents under <data-dir>/sessions, statistics in <data-dir>/stats.sqlite
        self.gateway.open_storage()
        self.cluster = join_cluster(self.gateway) if cfg.redis else None
        self._monitoring: asyncio.Task[None] | None = None
        self.phone: Any = None  # gateway.phone.server.PhoneFrontEnd with --sip-port
        self.webrtc = WebRtcFrontEnd(self.gateway)
        # one partial-message budget and write batch for RTMP, RTMPS and RTMPT sessions
        self.rtmp_shared = RtmpShared(cfg.limits)
        self.app = build_app(self.gateway, self.webrtc, self.rtmp_shared)
        self.runner: web.AppRunner | None = None
        self.guard: ConnectionGuard | None = None
        self.metrics_runner: web.AppRunner | None = None
        self.rtmp_servers: list = []
        self._sweeper: asyncio.Task[None] | None = None
        self.access_log: AccessLog | None = None
        self._detach_access_log: Callable[[], None] | None = None
        self._access_purger: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from rtmp.server import RtmpServer

        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        if self.gateway.documents is not None:
            # Consultations live in memory: whatever is under sessions/ now is a crash's
            # leftover (terms of use: documents are deleted at the end).
            await asyncio.to_thread(self.gateway.documents.sweep)
        # The access log (terms of use: browser data "für kurze Zeit"): files past
        # --access-log-days are deleted now, at each new day's first entry, and daily.
        self.access_log = AccessLog(cfg.data_dir / "logs", cfg.access_log_days)
        await asyncio.to_thread(self.access_log.purge)
        self._detach_access_log = self.access_log.attach()
        self._access_purger = asyncio.create_task(purge_daily(self.access_log), name="purge")
        ssl_ctx = make_ssl_context(cfg)
        await self._start_http(ssl_ctx)
        counters = self.gateway.connection_counters
        if cfg.rtmp_port:  # --rtmp-port 0: no plain (unencrypted) RTMP at all (issue 18)
            rtmp = RtmpServer(self.gateway, shared=self.rtmp_shared, kind="rtmp")
            await rtmp.start(cfg.host, cfg.rtmp_port)
            self.rtmp_servers.append(rtmp)
            counters["rtmp"] = lambda: len(rtmp.sessions)
        counters["webrtc"] = lambda: len(self.webrtc.sessions)
        if ssl_ctx is not None and cfg.rtmps_port:
            rtmps = RtmpServer(
                self.gateway, shared=self.rtmp_shared, kind="rtmps", ssl_context=ssl_ctx
            )
            await rtmps.start(cfg.host, cfg.rtmps_port)
            self.rtmp_servers.append(rtmps)
            counters["rtmps"] = lambda: len(rtmps.sessions)
        if cfg.sip_port:  # the telephone leg (docs/phone.md), off by default
            from gateway.phone.server import PhoneFrontEnd

            self.phone = phone = PhoneFrontEnd(self.gateway, host=cfg.host, port=cfg.sip_port)
            await phone.start()
            counters["phone"] = lambda: len(phone.legs)
            if cfg.sip_trunk:
                self.gateway.phone_dialer = phone.dial
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="sweeper")
        self._monitoring = asyncio.create_task(self._monitor_forever(), name="monitor")
        if self.cluster is not None:
            await self.cluster.start()  # registered once every door is open

    async def drain(self, stop_now: asyncio.Event) -> None:
        """Cluster mode's SIGTERM (docs/cluster.md): no new consultations here (placement
        goes to the other nodes, /readyz answers 503), the running ones finish, at most
        ``--drain-timeout`` seconds or until ``stop_now`` (a second signal)."""
        self.gateway.accepting = False
        directory = self.gateway.directory
        if self.cluster is not None:
            self.cluster.set_state("draining")
            await self.cluster.publish_state()
        log.info(
            "draining: %d consultation(s) may finish (at most %.0f s)",
            len(directory.consultations),
            self.config.drain_timeout,
        )
        deadline = time.monotonic() + self.config.drain_timeout
        while directory.consultations and time.monotonic() < deadline and not stop_now.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_now.wait(), 0.5)
        log.info("drained: %d consultation(s) left", len(directory.consultations))

    async def _start_http(self, ssl_ctx: ssl.SSLContext | None) -> None:
        """The web port behind the connection guard (web/guard.py); /metrics on its own
        listener when --metrics-listen says so."""
        from web import ops
        from web.accesslog import RedactingAccessLogger
        from web.guard import (
            ConnectionGuard,
            GuardedSite,
            HttpLimits,
            RateLimitedLog,
            make_handler_factory,
        )
        from web.guard import log as guard_log

        limits = self.config.limits
        # aiohttp's keep-alive also bounds the wait for a request head, from the accept.
        handler_args: dict[str, Any] = {
            "access_log_class": RedactingAccessLogger,
            "keepalive_timeout": limits.http_keepalive_timeout,
        }
        self.runner = web.AppRunner(
            self.app,
            handle_signals=False,
            shutdown_timeout=limits.http_shutdown_timeout,
            **handler_args,
        )
        report = RateLimitedLog(guard_log)
        self.guard = guard = ConnectionGuard(
            HttpLimits(
                max_connections=limits.http_max_connections,
                max_connections_per_address=limits.http_max_connections_per_address,
                body_timeout=limits.http_body_timeout,
                body_min_rate=limits.http_body_min_rate,
            ),
            make_handler_factory(self.runner, report, **handler_args),
            report=report,
        )
        # first, so the guard learns when a request's head is read and its body begins
        self.app.middlewares.insert(0, guard.middleware)
        await self.runner.setup()
        site = GuardedSite(
            self.runner,
            guard,
            self.config.host,
            self.config.http_port,
            ssl_context=ssl_ctx,
            ssl_handshake_timeout=max(limits.http_keepalive_timeout, 10.0),
        )
        await site.start()
        guard.start()
        if self.config.metrics_listen:
            host, port = config_mod.split_host_port(self.config.metrics_listen)
            self.metrics_runner = web.AppRunner(
                ops.metrics_app(self.app),
                handle_signals=False,
                shutdown_timeout=limits.http_shutdown_timeout,
                keepalive_timeout=limits.http_keepalive_timeout,
            )
            await self.metrics_runner.setup()
            await web.TCPSite(self.metrics_runner, host, port).start()

    async def _monitor_forever(self) -> None:
        monitor = self.gateway.monitor
        assert monitor is not None
        while True:
            await asyncio.sleep(MONITOR_INTERVAL)
            try:
                monitor.sample()
            except Exception:  # the monitor must never take the service down
                log.exception("monitor sample failed")

    async def _sweep_forever(self) -> None:
        # often enough that a short --session-grace (tests) is honoured promptly
        interval = min(SWEEP_INTERVAL, max(0.25, self.config.session_grace / 4))
        while True:
            await asyncio.sleep(interval)
            for cid in self.gateway.directory.expire():
                log.info("consultation %s… ended (expired or abandoned)", cid[:4])

    async def stop(self) -> None:
        self.gateway.accepting = False
        if self.cluster is not None:
            await self.cluster.stop()  # out of placement and the directory first
        if self.phone is not None:
            await self.phone.stop()
        self.gateway.directory.end_all("shutdown")
        for task in (self._sweeper, self._monitoring):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for server in self.rtmp_servers:
            await server.close()
        if self.metrics_runner is not None:
            await self.metrics_runner.cleanup()
        if self.guard is not None:
            await self.guard.stop()
        if self.runner is not None:
            # unfinished requests are cut after http_shutdown_timeout: a client holding a
            # request body open must not hold the shutdown
            await self.runner.cleanup()
        if self.gateway.statistics is not None:
            await asyncio.to_thread(self.gateway.statistics.close)  # queued rows written
        if self._access_purger is not None:
            self._access_purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._access_purger
        if self._detach_access_log is not None:
            self._detach_access_log()  # after the runner: its last requests are logged

    def banner(self) -> str:
        from web.links import rtmp_app_url

        cfg = self.config
        base = cfg.base_url()
        lines = [
            f"Video-Beratung gateway serving on {base} (RTMP {rtmp_app_url(cfg)})",
            f"Advisor page:   {base}/advisor",
        ]
        login = self.gateway.advisor_auth.login_token
        if login:
            minutes = round(self.gateway.advisor_auth.LOGIN_LINK_TTL / 60)
            lines.append(
                f"One-time advisor login: {base}/login?token={login} "
                f"(works once, for {minutes} minutes)"
            )
        accounts = self.gateway.advisor_auth.accounts
        if accounts is not None and accounts.accounts():
            lines.append(f"Advisor sign-in:        {base}/login")
        else:
            lines.append("No advisor accounts yet: python -m gateway advisor add NAME")
        return "\n".join(lines)


async def serve(cfg: Config) -> int:
    raise_descriptor_limit(descriptors_needed(cfg))
    service = Service(cfg)
    await service.start()
    # Everything built so far (modules, codecs, aiortc, tables) lives as long as the
    # process: out of the collector's way, so full collections while serving do not walk
    # it (pauses on the event loop) and the collection at exit does not either (it took
    # ~2 s and held up SIGTERM). Objects made later, tasks included, are collected (and
    # warned about) as before.
    gc.freeze()
    print(service.banner(), flush=True)
    stop = asyncio.Event()
    drain = asyncio.Event()  # cluster mode: SIGTERM drains, a second one (or SIGINT) stops
    loop = asyncio.get_running_loop()

    def on_term() -> None:
        (stop if drain.is_set() or service.cluster is None else drain).set()

    if service.cluster is not None:
        service.cluster.on_drain = drain.set  # the /ops action drains as SIGTERM does
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, on_term)
    try:
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(drain.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for waiting in waits:
            waiting.cancel()
        if drain.is_set() and not stop.is_set():
            await service.drain(stop)
    finally:
        log.info("shutting down: ending every consultation")
        await service.stop()
    return 0


def _loop_factory(cfg: Config) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop by default: every RTMP read and write goes through the event loop, and
    uvloop's is several times cheaper per wake-up than the pure-Python selector loop
    (bench/: the relay's CPU is dominated by those wake-ups, not by parsing)."""
    if cfg.event_loop != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:
        log.warning("uvloop is not installed; using the asyncio event loop")
        return None
    return uvloop.new_event_loop


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videoberatung",
        description="Video-Beratung gateway: Flash (RTMP) and WebRTC in one consultation.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run the gateway")
    config_mod.add_arguments(serve_p)
    advisor_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        try:
            cfg = config_mod.load(args)
        except (ValueError, OSError) as exc:
            parser.error(str(exc))
        logs.configure(cfg.log_level, cfg.log_format)
        try:
            with asyncio.Runner(loop_factory=_loop_factory(cfg)) as runner:
                return runner.run(serve(cfg))
        except (OSError, TemplateError) as exc:
            # TemplateError: a broken form template (--forms-dir) names its file and line
            print(f"videoberatung: {exc}", file=sys.stderr)
            return 1
    if args.command == "advisor":
        return advisor_cli.run(args)
    return 2
