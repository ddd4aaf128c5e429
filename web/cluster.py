"""The web side of cluster mode (docs/cluster.md).

- Sign-in sessions made on another node are loaded from the shared store before a
  request's handler runs (:func:`shared_sessions`).
- **Placement**: ``POST /api/sessions`` on any node creates the consultation on the node
  with the most headroom (:func:`place_elsewhere`); that node answers the internal
  ``POST /cluster/consultations`` and its URLs are the ones handed out.
- **Any door works** (:func:`owner_redirect`): a page, WHIP/WHEP, document or events URL
  of a consultation held by another node is answered with a redirect there (303 for a
  page, 307 otherwise, RFC 9110 §15.4); one whose node died gets the handler's own
  "ended"/404 answer.
- An advisor ends a consultation on another node through the internal
  ``DELETE /cluster/consultations/{id}`` (the owner checks that the advisor owns it).

Nodes call each other with ``Authorization: Bearer <cluster secret>`` (``vb:secret`` in
Redis, gateway/cluster/node.py).
"""

from __future__ import annotations

import hmac
import logging
import re
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from gateway.cluster import ClusterNode, NodeInfo
from gateway.consultation import Consultation, RoomDetailsRejected
from gateway.service import AdvisorSession
from web.auth import ADVISOR_COOKIE, bearer_token
from web.keys import GATEWAY_KEY
from web.links import session_document
from web.problems import ProblemError
from web.templates import View, esc

log = logging.getLogger(__name__)

routes = web.RouteTableDef()
CLIENT_KEY = web.AppKey("cluster_client", aiohttp.ClientSession)
# the door paths that name a consultation (an id, or the customer link for /k and /flash)
_DOORS = re.compile(
    r"^/(?:k|flash|advisor|whip|whep|api/sessions)/(?P<id>[A-Za-z0-9_-]{1,64})(?:/|$)"
)
_INTERNAL_TIMEOUT = aiohttp.ClientTimeout(total=5.0)


def cluster_of(request: web.Request) -> ClusterNode | None:
    node = request.app[GATEWAY_KEY].cluster
    return node if isinstance(node, ClusterNode) else None


def _session_ids(request: web.Request) -> list[str]:
    ids = []
    sid = request.cookies.get(ADVISOR_COOKIE)
    if sid:
        ids.append(sid)
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        ids.append(token.strip())
    return ids


@web.middleware
async def shared_sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Load the caller's advisor session from the shared store (a sign-in on another
    node) or re-check it; the handlers then look it up in memory as on a single node."""
    auth = request.app[GATEWAY_KEY].advisor_auth
    if auth.shared is not None:
        for sid in _session_ids(request):
            await auth.refresh(sid)
    return await handler(request)


@web.middleware
async def owner_redirect(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Send a door of a consultation held by another live node there."""
    node = cluster_of(request)
    match = _DOORS.match(request.path)
    if node is None or match is None or request.path == "/api/sessions":
        return await handler(request)
    ident = match["id"]
    directory = request.app[GATEWAY_KEY].directory
    if directory.get(ident) is not None or directory.by_link(ident) is not None:
        return await handler(request)
    if request.path == f"/advisor/{ident}/end":
        return await handler(request)  # the start page's "end": asked of the owner there
    owner = await node.locate(ident)
    if owner is None:
        return await handler(request)  # unknown, ended, or its node died: "ended"
    if request.method == "DELETE" and request.path == f"/api/sessions/{ident}":
        # an advisor ends a consultation of theirs on another node: asked there
        return await _end_remote(request, node, owner, ident)
    target = owner.url + request.path_qs
    status = 303 if request.method in ("GET", "HEAD") and not _is_api(request.path) else 307
    if request.method not in ("GET", "HEAD"):
        status = 307  # keep the method and body (RFC 9110 §15.4.8)
    raise web.HTTPTemporaryRedirect(target) if status == 307 else web.HTTPSeeOther(target)


def _is_api(path: str) -> bool:
    return path.startswith(("/api/", "/whip/", "/whep/"))


async def _end_remote(
    request: web.Request, node: ClusterNode, owner: NodeInfo, cid: str
) -> web.StreamResponse:
    from web.auth import require_advisor

    principal = require_advisor(request)
    assert principal.advisor_id is not None
    status = await end_on(request.app, node, owner, cid, principal.advisor_id)
    if status == 204:
        return web.Response(status=204)
    if status == 403:
        raise ProblemError(403, "This consultation belongs to another advisor.")
    raise ProblemError(404, "No such consultation (it may have ended).")


async def end_on(
    app: web.Application, node: ClusterNode, owner: NodeInfo, cid: str, advisor: str
) -> int:
    """Ask ``owner`` to end ``cid`` for ``advisor``; the owner's status (204/403/404)."""
    try:
        async with _client(app).delete(
            f"{owner.internal}/cluster/consultations/{quote(cid, safe='')}",
            params={"owner": advisor},
            headers=_internal_headers(node),
        ) as response:
            return response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("cluster: could not reach node %s to end a consultation: %s", owner.id, exc)
        return 404


async def place_elsewhere(
    request: web.Request, owner: str, shown: str | None, options: dict[str, Any]
) -> web.Response | None:
    """Create the consultation on the node with most headroom when that is another
    node (its answer, with that node's URLs); None: create it here."""
    node = cluster_of(request)
    if node is None:
        return None
    for target in node.placement_order():
        if target.id == node.info.id:
            if request.app[GATEWAY_KEY].accepting:
                node.placed(target.id)
                return None
            continue
        body = {
            "owner": owner,
            "owner_display_name": shown,
            "label": options.get("label"),
            "appointment": options.get("appointment"),
            "waiting_room": options.get("waiting_room", False),
        }
        try:
            async with _client(request.app).post(
                f"{target.internal}/cluster/consultations",
                json=body,
                headers=_internal_headers(node),
            ) as response:
                if response.status == 201:
                    document = await response.json()
                    node.placed(target.id)
                    log.info("consultation %s placed on node %s", document["id"], target.id)
                    return web.json_response(
                        document,
                        status=201,
                        headers={"Location": f"{target.url}/api/sessions/{document['id']}"},
                    )
                if response.status == 400:
                    problem = await response.json()
                    raise ProblemError(400, str(problem.get("detail", "Bad request.")))
                # 503 (full or draining since its last heartbeat): the next node
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("cluster: node %s did not take a consultation: %s", target.id, exc)
    if request.app[GATEWAY_KEY].accepting:
        return None  # nobody else could: here, under this node's own admission check
    raise ProblemError(503, "No node of the cluster takes new consultations now.")


async def announce(request: web.Request, consultation: Consultation) -> None:
    """A consultation made here goes into the directory before its URLs are handed out."""
    node = cluster_of(request)
    if node is not None:
        node.announce(consultation)
        await node.flush_now()


async def end_elsewhere(request: web.Request, cid: str, advisor: str) -> None:
    """The start page's "end" for a consultation on another node: asked of its node."""
    node = cluster_of(request)
    if node is None:
        return
    owner = await node.locate(cid)
    if owner is not None and await end_on(request.app, node, owner, cid, advisor) == 204:
        log.info("consultation %s on node %s ended by the advisor", cid, owner.id)


async def rooms_elsewhere(
    request: web.Request, entry: AdvisorSession
) -> list[tuple[NodeInfo, dict[str, Any]]]:
    node = cluster_of(request)
    return [] if node is None else await node.remote_rooms(entry.principal)


def remote_row(v: View, node: NodeInfo, room: dict[str, Any], csrf: str) -> str:
    """A start-page row of a consultation on another node: its label, time and customer
    state; join on that node (its room page shows the link and PIN), end from here."""
    from web.advisor import _STATE_KEYS, _time

    cid = esc(str(room["id"]))
    state = str(room.get("customer", "absent"))
    label = (
        f'<span class="room-label">{esc(str(room["label"]))}</span>'
        if room.get("label")
        else v.tr("overview.no_label", "span", 'class="room-label none"')
    )
    appointment = room.get("appointment")
    when = (
        _time(float(appointment))
        if appointment is not None
        else v.tr("overview.created_at", "span", 'class="created"')
        + " "
        + _time(float(room.get("created", 0.0)))
    )
    join = f"{node.url}/advisor/{cid}"
    return (
        f'<tr id="c-{cid}" data-id="{cid}" data-state="{esc(state)}" data-node="{esc(node.id)}">'
        f'<td class="when">{when}</td>'
        f'<td><a href="{esc(join)}">{label}</a></td>'
        f'<td colspan="2"><a href="{esc(join)}">{esc(node.url)}</a></td>'
        + v.tr(_STATE_KEYS.get(state, "overview.absent"), "td", 'class="customer-state"')
        + f'<td class="row-actions"><a class="button primary" href="{esc(join)}">'
        + v.tr("overview.join")
        + "</a>"
        f'<form method="post" action="/advisor/{cid}/end" class="end-form" '
        f'data-confirm="overview.end_confirm">'
        f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
        '<button type="submit" class="danger">'
        + v.tr("overview.end")
        + "</button></form></td></tr>"
    )


def _client(app: web.Application) -> aiohttp.ClientSession:
    return app[CLIENT_KEY]


def _internal_headers(node: ClusterNode) -> dict[str, str]:
    return {hdrs.AUTHORIZATION: f"Bearer {node.secret or ''}"}


def _require_node(request: web.Request) -> ClusterNode:
    node = cluster_of(request)
    if node is None:
        raise web.HTTPNotFound()
    token = bearer_token(request)
    if not token or not node.secret or not hmac.compare_digest(token, node.secret):
        raise ProblemError(403, "Only the cluster's nodes may call this.")
    return node


@routes.post("/cluster/consultations")
async def create_placed(request: web.Request) -> web.Response:
    """Another node places a consultation here (it checked the advisor)."""
    from web.api import _appointment

    node = _require_node(request)
    gateway = request.app[GATEWAY_KEY]
    body = await request.json()
    if not isinstance(body, dict) or not isinstance(body.get("owner"), str):
        raise ProblemError(400, "owner missing")
    if not gateway.accepting:
        raise ProblemError(503, "This node is draining.")
    if gateway.monitor is not None and not gateway.monitor.admission()["accepting_consultations"]:
        raise ProblemError(503, "This node is full.")
    shown = body.get("owner_display_name")
    try:
        consultation = gateway.directory.create(
            body["owner"],
            owner_display_name=shown if isinstance(shown, str) else None,
            label=body.get("label"),
            appointment=_appointment(body.get("appointment")),
            waiting_room=body.get("waiting_room") is True,
        )
    except RoomDetailsRejected as exc:
        raise ProblemError(400, str(exc)) from None
    node.announce(consultation)
    await node.flush_now()  # in the directory before its URLs leave the cluster
    log.info("consultation %s created (placed here by another node)", consultation.id)
    return web.json_response(session_document(gateway.config, consultation), status=201)


@routes.delete("/cluster/consultations/{id}")
async def end_placed(request: web.Request) -> web.Response:
    node = _require_node(request)
    directory = request.app[GATEWAY_KEY].directory
    consultation = directory.get(request.match_info["id"])
    if consultation is None or consultation.ended:
        return web.Response(status=404)
    if not consultation.owned_by(request.query.get("owner")):
        return web.Response(status=403)
    directory.end(consultation.id, "ended")
    log.info("consultation %s ended by its advisor on another node", consultation.id)
    # out of the directory and the start pages before the asking node shows its page
    await node.flush_now()
    return web.Response(status=204)


# -- the cluster on /ops -------------------------------------------------------------------


def cluster_section(v: View, node: ClusterNode, csrf: str | None) -> str:
    """The /ops card: every live node with its state, load and consultations, and the
    button that drains this node (the ops action beside SIGTERM)."""
    cols = ("node", "state", "load", "consultations", "url")
    heads = "".join(v.tr(f"ops.cluster.col.{c}", "th", 'scope="col"') for c in cols)
    rows = []
    for info in sorted(node.live_nodes(), key=lambda n: n.id):
        me = (
            " " + v.tr("ops.cluster.this", "span", 'class="badge"')
            if info.id == node.info.id
            else ""
        )
        rows.append(
            f'<tr data-node="{esc(info.id)}" data-state="{esc(info.state)}">'
            f"<td>{esc(info.id)}{me}</td>"
            + v.tr(f"ops.cluster.state.{info.state}", "td")
            + f"<td>{info.load:.2f} / {info.budget:.2f}</td>"
            f"<td>{info.consultations}</td>"
            f'<td><a class="link" href="{esc(info.url)}/ops">{esc(info.url)}</a></td></tr>'
        )
    drain = ""
    if node.info.state == "serving" and node.on_drain is not None:
        hidden = f'<input type="hidden" name="csrf" value="{esc(csrf)}">' if csrf else ""
        drain = (
            f'<form method="post" action="/ops/drain" class="drain-form">{hidden}'
            '<button type="submit" class="danger">'
            + v.tr("ops.cluster.drain")
            + "</button></form>"
            + v.tr("ops.cluster.drain_hint", "p", 'class="hint"')
        )
    return (
        f'<section class="card" id="ops-cluster">{v.tr("ops.cluster", "h2")}'
        f'<div class="table-wrap"><table id="ops-nodes"><thead><tr>{heads}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>{drain}</section>"
    )


@routes.post("/ops/drain")
async def drain(request: web.Request) -> web.Response:
    """Drain this node (as SIGTERM does): the operator's button on /ops, or a bearer
    advisor token (automation of a rolling upgrade, docs/cluster.md)."""
    from web.auth import check_csrf, identify

    principal = identify(request)
    if principal is None or not principal.advisor:
        raise ProblemError(403, "Only the operations staff may drain a node.")
    if principal.via_cookie:
        form = await request.post()
        token = form.get("csrf")
        check_csrf(request, principal, token if isinstance(token, str) else None)
    node = cluster_of(request)
    if node is None or node.on_drain is None:
        raise ProblemError(409, "This node is not part of a cluster.")
    log.warning("drain requested on /ops")
    node.on_drain()
    if principal.via_cookie:
        raise web.HTTPSeeOther("/ops")
    return web.json_response({"state": "draining"}, status=202)


async def _client_ctx(app: web.Application) -> Any:
    app[CLIENT_KEY] = aiohttp.ClientSession(timeout=_INTERNAL_TIMEOUT)
    yield
    await app[CLIENT_KEY].close()


def setup(app: web.Application) -> None:
    gateway = app[GATEWAY_KEY]
    if gateway.advisor_auth.shared is not None:
        app.middlewares.append(shared_sessions)
    if gateway.cluster is not None:
        app.middlewares.append(owner_redirect)
        app.cleanup_ctx.append(_client_ctx)
        app.add_routes(routes)
