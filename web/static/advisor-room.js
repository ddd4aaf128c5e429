// The advisor's consultation page: the customer's picture (WHEP), the advisor's own
// camera and microphone (WHIP), chat, the customer's presence and camera/microphone
// state, connection quality, the customer's link and PIN, and ending the consultation.
"use strict";

(function () {
  const VB = window.VB;
  const page = VB.room.params("advisor");
  if (!page) {
    return;
  }
  const room = page.room;
  const i18n = VB.i18n;
  const byId = VB.room.byId;
  const setStatus = VB.room.setStatus;

  const presenceEl = byId("presence");
  const noticeEl = byId("notice");
  const selfVideo = byId("self-video");
  const cameraButton = byId("camera");
  const micButton = byId("microphone");
  const endButton = byId("end-session");
  const endDialog = byId("end-dialog");

  const state = {
    finished: false,
    sending: false,
    tracks: { video: null, audio: null },
    customer: { present: false, publishing: false, camera: false, microphone: false, via: null },
    send: "closed",
  };

  // -- what the page says: one state machine ---------------------------------------------
  //   state          status line            line about the customer
  const VIEWS = {
    connecting: ["status.connecting", "connecting", "room.customer.absent"],
    absent: ["status.connected", "connected", "room.customer.absent"],
    waiting: ["status.connected", "connected", "room.customer.waiting"],
    together: ["status.connected", "connected", "room.customer.connected"],
    stalled: ["status.connected", "connected", "room.customer.reconnecting"],
    gone: ["status.connected", "connected", "room.customer.gone"],
    down: ["status.reconnecting", "down", null],
    ended: ["status.ended", "ended", null],
    elsewhere: ["status.elsewhere", "ended", null],
  };
  // Events: the socket's open/down; the customer joins or goes (customer_in/out); the
  // gateway stops or starts receiving the customer's media although it is switched on
  // (stall/flow: a customer outage, from the gateway's own measurement); the advisor
  // starts or stops sending (send_on/off); the end; another tab takes over.
  const FINAL = { end: "ended", elsewhere: "elsewhere" };
  function row(moves) {
    return Object.assign({ down: "down" }, moves, FINAL);
  }
  const TRANSITIONS = {
    connecting: Object.assign({ open: "absent" }, FINAL),
    absent: row({ customer_in: "waiting" }),
    waiting: row({ customer_out: "gone", send_on: "together", stall: "stalled" }),
    together: row({ customer_out: "gone", send_off: "waiting", stall: "stalled" }),
    stalled: row({ customer_out: "gone", flow: "waiting" }),
    gone: row({ customer_in: "waiting" }),
    down: Object.assign({ open: "absent" }, FINAL),
    ended: {},
    elsewhere: {},
  };
  const machine = new VB.room.Machine(TRANSITIONS, "connecting", function (s) {
    if (s === "waiting" && state.sending) {
      machine.fire("send_on"); // renders again
      return;
    }
    renderState();
  });

  function showNotice(key, params) {
    if (!key) {
      noticeEl.hidden = true;
      return;
    }
    i18n.setText(noticeEl, key, params);
    noticeEl.hidden = false;
  }

  // -- customer presence and media state ----------------------------------------------

  const VIA_KEYS = { flash: "room.via.flash", browser: "room.via.browser", chat: "room.via.chat" };

  function renderState() {
    const view = VIEWS[machine.state];
    setStatus(view[0], view[1]);
    // a customer in the waiting room is "here" for the machine, yet not in the call
    const line = view[2] && inLobby() ? "lobby.advisor_waiting" : view[2];
    VB.room.setLine(presenceEl, line, { via: { t: VIA_KEYS[state.customer.via || "chat"] } });
    renderCustomerMedia();
    renderRemote();
  }

  function renderBadge(id, on, onKey, offKey) {
    const badge = byId(id);
    badge.dataset.on = String(on);
    i18n.setText(badge.querySelector(".badge-text"), on ? onKey : offKey);
  }

  // While the gateway receives nothing of what the customer switched on, the badges
  // say so instead of "on".
  function renderCustomerMedia() {
    const stalled = machine.is("stalled");
    renderBadge("customer-camera", state.customer.camera, "room.camera_on", "room.camera_off");
    renderBadge("customer-mic", state.customer.microphone, "room.mic_on", "room.mic_off");
    ["customer-camera", "customer-mic"].forEach(function (id) {
      const badge = byId(id);
      if (stalled && badge.dataset.on === "true") {
        badge.dataset.on = "stalled";
        i18n.setText(badge.querySelector(".badge-text"), id === "customer-camera" ? "room.camera_stalled" : "room.mic_stalled");
      }
    });
  }

  const remote = new VB.room.RemoteView(
    function () {
      return state.customer;
    },
    function () {
      if (remote.receive === "displaced") {
        return "media.remote.displaced";
      } else if (machine.is("stalled")) {
        return "room.customer.reconnecting";
      } else if (!state.customer.present) {
        return "room.remote.absent";
      } else if (inLobby()) {
        return "lobby.advisor_remote";
      } else if (!state.customer.camera) {
        return "room.remote.camera_off";
      }
      return "room.remote.no_video";
    }
  );
  const renderRemote = remote.render;

  // How the customer takes part, from the consultation's state (GET, cookie): Flash
  // (an RTMP connection), browser (a WebRTC peer) or chat only (just the events socket).
  let refreshTimer = null;
  async function refreshCustomer() {
    refreshTimer = null;
    if (state.finished) {
      return;
    }
    try {
      const resp = await fetch(room.dataset.session, {
        credentials: "same-origin",
        cache: "no-store",
      });
      if (!resp.ok) {
        return;
      }
      const body = await resp.json();
      const customer = body.participants && body.participants.customer;
      if (!customer) {
        return;
      }
      const kinds = (customer.connections || []).map(function (c) {
        return c.kind;
      });
      let via = "chat";
      if (
        kinds.some(function (k) {
          return k.indexOf("rtmp") === 0;
        })
      ) {
        via = "flash";
      } else if (kinds.indexOf("webrtc") >= 0) {
        via = "browser";
      }
      state.customer.via = via;
      renderState();
    } catch (err) {
      // the next event or tick tries again
    }
  }

  function refreshSoon() {
    if (refreshTimer === null) {
      refreshTimer = window.setTimeout(refreshCustomer, 400);
    }
  }

  // A WebRTC peer joins a few seconds after the customer's page (ICE, DTLS) without an
  // event of its own: look again shortly after every change, and every 10 s anyway.
  function scheduleRefresh() {
    refreshSoon();
    [2000, 5000].forEach(function (ms) {
      window.setTimeout(refreshSoon, ms);
    });
  }
  window.setInterval(refreshSoon, 10000);

  // -- events socket and chat -------------------------------------------------------------

  // While a reload restores the camera and microphone, they are announced as on
  // already: the customer sees "connecting", not "the camera is off", meanwhile. The
  // gateway forwards nothing until media actually arrives.
  function announce() {
    socket.send({
      type: "media",
      camera: !!(state.tracks.video || restoring.video),
      microphone: !!(state.tracks.audio || restoring.audio),
    });
  }

  // -- the waiting room: alert, "Einlassen" ------------------------------------------------
  // The customer waits (present, not let in yet): the card with "Einlassen", a chime, the
  // tab's title and, if the advisor allowed it, a desktop notification while the tab is
  // out of sight. Once per waiting, not on every event.
  const lobbyCard = byId("lobby-card");
  const admitButton = byId("admit");
  const notifyButton = byId("notify-enable");
  let alerted = false;

  function inLobby() {
    return state.customer.present && state.customer.admitted === false;
  }

  function renderLobby() {
    const waiting = inLobby();
    lobbyCard.hidden = !waiting || state.finished;
    VB.title.set("alert", waiting && !state.finished ? i18n.t("lobby.advisor_waiting") : "");
    notifyButton.hidden = !(
      waiting &&
      typeof window.Notification === "function" &&
      window.Notification.permission === "default"
    );
    renderState();
    if (waiting && !alerted) {
      alerted = true;
      if (VB.sounds) {
        VB.sounds.play("lobby");
      }
      notify();
    } else if (!waiting) {
      alerted = false;
    }
  }

  function notify() {
    if (
      typeof window.Notification !== "function" ||
      window.Notification.permission !== "granted" ||
      !document.hidden
    ) {
      return;
    }
    try {
      const n = new window.Notification(i18n.t("app.name"), {
        body: i18n.t("lobby.notification"),
        tag: "vb-lobby-" + room.dataset.id,
      });
      n.addEventListener("click", function () {
        window.focus();
        n.close();
      });
    } catch (err) {
      // some browsers allow notifications from a service worker only
    }
  }

  notifyButton.addEventListener("click", function () {
    window.Notification.requestPermission().then(renderLobby, renderLobby);
  });

  admitButton.addEventListener("click", async function () {
    admitButton.setAttribute("aria-busy", "true");
    try {
      const resp = await fetch(lobbyCard.dataset.admit, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": page.csrf },
      });
      if (!resp.ok) {
        showNotice("room.send.failed", { detail: resp.status });
      }
    } catch (err) {
      showNotice("room.send.failed", { detail: "–" });
    } finally {
      admitButton.removeAttribute("aria-busy");
    }
    // the admission event hides the card
  });

  function onEvent(ev) {
    const c = state.customer;
    if (ev.type === "admission" && ev.role === "customer") {
      c.admitted = !!ev.admitted;
      renderLobby();
    } else if (ev.type === "participant" && ev.role === "customer") {
      // a chime when the customer comes (not when the page learns they are here; one
      // who waits to be let in gets the waiting room's own)
      if (state.customerKnown && !c.present && ev.present && c.admitted !== false && VB.sounds) {
        VB.sounds.play("join");
      }
      state.customerKnown = true;
      c.present = !!ev.present;
      renderLobby();
      machine.fire(c.present ? "customer_in" : "customer_out");
      renderRemote();
      scheduleRefresh();
    } else if (ev.type === "media" && ev.role === "customer") {
      const started = !c.publishing && !!ev.publishing;
      c.publishing = !!ev.publishing;
      c.camera = !!ev.camera;
      c.microphone = !!ev.microphone;
      if (!c.camera) {
        remote.flowing = false; // hide the last frame at once
      }
      if (started && receiver) {
        receiver.kick();
      }
      renderCustomerMedia();
      renderRemote();
      scheduleRefresh();
    } else if (ev.type === "quality" && ev.role === "customer") {
      renderUplink(ev);
    } else if (ev.type === "phone" && VB.phone) {
      VB.phone.onEvent(ev); // the telephone leg: "Telefon verbunden" (phone.js)
    } else if (ev.type === "access" && VB.access) {
      VB.access.onEvent(ev); // the customer's link locked or renewed (access.js)
    }
  }

  const events = VB.room.events(page, "advisor", {
    typingText: function () {
      return "chat.typing.customer";
    },
    announce: announce,
    fire: function (event) {
      machine.fire(event);
    },
    onEvent: onEvent,
    finished: function () {
      return state.finished;
    },
    onEnded: function () {
      finish();
    },
  });
  const socket = events.socket;
  const chat = events.chat;

  // -- quality ------------------------------------------------------------------------------

  const PC_KEYS = {
    connecting: "pc.connecting",
    connected: "pc.connected",
    disconnected: "pc.disconnected",
    retrying: "pc.failed",
    unavailable: "pc.unavailable",
    rejected: "pc.unavailable",
    gone: "pc.connecting",
    displaced: "pc.displaced",
    closed: "pc.off",
  };

  function renderLinkState(direction, linkState) {
    i18n.setText(byId(direction + "-state"), PC_KEYS[linkState] || "pc.new");
    if (linkState !== "connected") {
      byId(direction + "-dot").dataset.quality = "";
      byId(direction + "-stats").textContent = "";
    }
  }

  function renderStats(direction, summary) {
    // the advisor's own leg may be fine while nothing comes from the customer
    const quality = direction === "receive" && machine.is("stalled") ? "poor" : summary.quality;
    byId(direction + "-dot").dataset.quality = quality || "";
    if (summary.state !== "connected") {
      return;
    }
    i18n.setText(byId(direction + "-stats"), "room.quality.line", {
      kbps: i18n.number(summary.kbps),
      loss: i18n.number(summary.lossPct, 1),
      rtt: summary.rttMs === null ? "–" : i18n.number(summary.rttMs),
    });
  }

  // The customer's own connection as the gateway measures it (a "quality" event every
  // few seconds while the customer sends): what arrives from them, the loss on the way
  // and the round trip. "stalled": switched on, yet nothing arrives.
  function renderUplink(ev) {
    const dot = byId("uplink-dot");
    const stateEl = byId("uplink-state");
    const statsEl = byId("uplink-stats");
    if (!ev.sending) {
      dot.dataset.quality = "";
      i18n.setText(stateEl, "pc.off");
      statsEl.textContent = "";
      // the customer's WHIP session ended: by switching off (fine), or because their
      // connection failed while something is still on (still an outage)
      if (!(state.customer.camera || state.customer.microphone)) {
        machine.fire("flow");
      }
      return;
    }
    dot.dataset.quality = ev.stalled ? "poor" : ev.quality || "";
    i18n.setText(stateEl, ev.stalled ? "room.uplink.stalled" : "pc.connected");
    i18n.setText(statsEl, "room.quality.line", {
      kbps: i18n.number(ev.kbps),
      loss: i18n.number(ev.loss_pct, 1),
      rtt: ev.rtt_ms === null || ev.rtt_ms === undefined ? "–" : i18n.number(ev.rtt_ms),
    });
    machine.fire(ev.stalled ? "stall" : "flow");
  }

  // -- receiving the customer (WHEP) -------------------------------------------------------

  const receiver = VB.rtc.supported
    ? VB.room.link(page, "whep", {
        onTrack: remote.onTrack,
        onState: function (s) {
          remote.setReceive(s);
          renderLinkState("receive", s);
          renderRemote();
          scheduleRefresh();
        },
        onStats: function (summary) {
          remote.setFlowing(summary.videoFlowing);
          renderStats("receive", summary);
          renderRemote();
        },
        expectVideo: function () {
          return state.customer.publishing && state.customer.camera;
        },
      })
    : null;

  remote.retryButton.addEventListener("click", function () {
    if (receiver) {
      receiver.start();
    }
  });

  // What was on survives a reload of this page (for this consultation, in this tab):
  // the customer is not told the camera went off, and nothing must be pressed again.
  const REMEMBER = "vb-advisor-media:" + room.dataset.id;
  let restoring = {};

  function remember() {
    try {
      window.sessionStorage.setItem(
        REMEMBER,
        JSON.stringify({ video: !!state.tracks.video, audio: !!state.tracks.audio })
      );
    } catch (err) {
      // storage off: a reload starts with both off, as the first visit does
    }
  }

  function remembered() {
    try {
      return JSON.parse(window.sessionStorage.getItem(REMEMBER) || "{}") || {};
    } catch (err) {
      return {};
    }
  }

  // -- sending (WHIP) -------------------------------------------------------------------------
  // The toggles show what is on now. Switching one on starts the WHIP session if there
  // is none; "start sending" switches both on, "stop sending" both off (and DELETEs).

  let publisher = null;

  function renderSend() {
    const sending = !!(state.tracks.video || state.tracks.audio);
    state.sending = sending;
    VB.room.renderToggles(!!state.tracks.video, !!state.tracks.audio);
    VB.room.renderSelfView(!!state.tracks.video);
    machine.fire(sending ? "send_on" : "send_off");
  }

  function ensurePublisher() {
    if (publisher) {
      return;
    }
    publisher = VB.room.link(page, "whip", {
      maxVideoKbps: 800, // the customer's downlink may be 1 Mbit/s (terms of use)
      tracks: function () {
        return state.tracks;
      },
      onState: function (s, detail) {
        state.send = s;
        renderLinkState("send", s);
        if (s === "unavailable" || s === "rejected" || s === "displaced") {
          publisher = null;
          switchOff("video");
          switchOff("audio");
          if (s === "displaced") {
            showNotice("media.send.displaced");
          } else {
            showNotice("room.send.failed", { detail: detail || s });
          }
        }
      },
      onStats: function (summary) {
        renderStats("send", summary);
      },
    });
    publisher.start();
  }

  // Another device chosen while one is on: its new track replaces the old one in the
  // running session (no renegotiation, the customer sees no "off" meanwhile).
  async function replaceDevice(kind) {
    const old = state.tracks[kind];
    if (!old || state.finished) {
      return;
    }
    let track;
    try {
      track = await VB.rtc.capture(kind);
    } catch (err) {
      showNotice("room.send.failed", { detail: err.name || String(err) });
      return;
    }
    if (state.tracks[kind] !== old || state.finished) {
      track.stop();
      return;
    }
    VB.room.useTrack(state.tracks, kind, track, switchOff);
    old.stop();
    if (publisher) {
      await publisher.setTrack(kind, track);
    }
  }

  const devicesDialog = byId("devices-dialog");
  if (devicesDialog && VB.devices && VB.rtc.canCapture) {
    const openDevices = VB.devices.chooser(devicesDialog, async function (applied) {
      if (!applied) {
        return;
      }
      VB.devices.applySpeaker(remote.video);
      await replaceDevice("video");
      await replaceDevice("audio");
    });
    byId("devices-open").addEventListener("click", openDevices);
  } else if (devicesDialog) {
    byId("devices-open").hidden = true;
  }

  async function switchOn(kind) {
    if (state.tracks[kind] || state.finished) {
      return;
    }
    let track;
    try {
      track = await VB.rtc.capture(kind);
    } catch (err) {
      showNotice("room.send.failed", { detail: err.name || String(err) });
      return;
    }
    if (state.tracks[kind] || state.finished) {
      track.stop();
      return;
    }
    showNotice(null);
    VB.room.useTrack(state.tracks, kind, track, switchOff);
    announce();
    renderSend();
    remember();
    if (publisher) {
      await publisher.setTrack(kind, track);
    } else {
      ensurePublisher();
    }
  }

  function switchOff(kind, keepalive, serverGone) {
    const track = state.tracks[kind];
    state.tracks[kind] = null;
    if (track) {
      track.stop();
    }
    if (kind === "video") {
      selfVideo.srcObject = null;
    }
    if (publisher) {
      if (!state.tracks.video && !state.tracks.audio) {
        const p = publisher;
        publisher = null;
        p.stop(keepalive, serverGone);
      } else {
        publisher.setTrack(kind, null);
      }
    }
    announce();
    renderSend();
    if (!state.finished) {
      remember();
    }
  }

  function stopSending(keepalive, serverGone) {
    switchOff("video", keepalive, serverGone);
    switchOff("audio", keepalive, serverGone);
  }

  // Busy while the browser asks for the device; not disabled, since a disabled button
  // drops the keyboard focus to the top of the page.
  async function busy(button, action) {
    if (button.getAttribute("aria-busy")) {
      return;
    }
    button.setAttribute("aria-busy", "true");
    try {
      await action();
    } finally {
      button.removeAttribute("aria-busy");
      button.disabled = state.finished;
    }
  }

  cameraButton.addEventListener("click", function () {
    busy(cameraButton, function () {
      return state.tracks.video ? switchOff("video") : switchOn("video");
    });
  });
  micButton.addEventListener("click", function () {
    busy(micButton, function () {
      return state.tracks.audio ? switchOff("audio") : switchOn("audio");
    });
  });

  // -- link and PIN to copy --------------------------------------------------------------------

  // -- ending ---------------------------------------------------------------------------------

  async function endConsultation() {
    endButton.disabled = true;
    let resp;
    try {
      resp = await fetch("/api/sessions/" + encodeURIComponent(room.dataset.id), {
        method: "DELETE",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": page.csrf },
      });
    } catch (err) {
      resp = { status: 0 };
    }
    if (resp.status === 204 || resp.status === 404) {
      finish();
      window.location.href = "/advisor";
      return;
    }
    endButton.disabled = false;
    showNotice("room.end.failed", { status: resp.status || "–" });
  }

  endButton.addEventListener("click", function () {
    if (typeof endDialog.showModal === "function") {
      endDialog.returnValue = "";
      endDialog.showModal();
    } else if (window.confirm(i18n.t("room.end.question"))) {
      endConsultation();
    }
  });
  endDialog.addEventListener("close", function () {
    if (endDialog.returnValue === "confirm") {
      endConsultation();
    }
  });

  // The consultation is over (the server has closed every peer already), or this page
  // stands down for a newer one of the same consultation ("elsewhere").
  function finish(why) {
    if (state.finished) {
      return;
    }
    const serverGone = why !== "elsewhere";
    stopSending(true, serverGone);
    state.finished = true;
    if (receiver) {
      receiver.stop(true, serverGone);
    }
    socket.close();
    chat.setEnabled(false);
    if (why === "elsewhere") {
      machine.fire("elsewhere");
      showNotice("room.elsewhere");
    } else {
      machine.fire("end");
      showNotice(null);
    }
    cameraButton.disabled = true;
    micButton.disabled = true;
    endButton.disabled = true;
    renderLobby();
  }

  VB.room.releaseOnPageHide(function () {
    return [publisher, receiver];
  });

  i18n.onChange(function () {
    renderRemote();
  });

  // "Zur Übersicht" while a call runs: ask first (the customer would see the advisor go).
  const backLink = document.querySelector("a.nav-back");
  const leaveDialog = byId("leave-dialog");
  if (backLink && leaveDialog) {
    backLink.addEventListener("click", function (e) {
      if (state.finished || !(state.sending || state.customer.present)) {
        return;
      }
      e.preventDefault();
      if (typeof leaveDialog.showModal === "function") {
        leaveDialog.returnValue = "";
        leaveDialog.showModal();
      } else if (window.confirm(i18n.t("room.leave.question"))) {
        window.location.href = backLink.href;
      }
    });
    leaveDialog.addEventListener("close", function () {
      if (leaveDialog.returnValue === "confirm") {
        window.location.href = backLink.href;
      }
    });
  }

  // -- start ------------------------------------------------------------------------------------

  renderSend();
  renderState();
  renderLinkState("receive", "closed");
  renderLinkState("send", "closed");
  VB.room.begin(page, socket, function () {
    finish("elsewhere");
  });
  if (receiver) {
    receiver.start();
    restoring = remembered();
    (async function () {
      // one after the other: two prompts at once confuse people
      if (restoring.video) {
        await busy(cameraButton, function () {
          return switchOn("video");
        });
      }
      if (restoring.audio) {
        await busy(micButton, function () {
          return switchOn("audio");
        });
      }
      const was = restoring;
      restoring = {};
      if (was.video || was.audio) {
        announce(); // what is really on now (a device may have been refused)
      }
    })();
  } else {
    cameraButton.disabled = true;
    micButton.disabled = true;
    renderLinkState("receive", "unavailable");
  }
  scheduleRefresh();
})();
