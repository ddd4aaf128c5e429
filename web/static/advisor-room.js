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
  const sendButton = byId("send");
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

  function renderPresence() {
    const c = state.customer;
    if (!c.present) {
      i18n.setText(presenceEl, "room.customer.absent");
      return;
    }
    const via = { t: VIA_KEYS[c.via || "chat"] };
    i18n.setText(presenceEl, state.sending ? "room.customer.connected" : "room.customer.waiting", {
      via: via,
    });
  }

  function renderBadge(id, on, onKey, offKey) {
    const badge = byId(id);
    badge.dataset.on = String(on);
    i18n.setText(badge.querySelector(".badge-text"), on ? onKey : offKey);
  }

  function renderCustomerMedia() {
    renderBadge("customer-camera", state.customer.camera, "room.camera_on", "room.camera_off");
    renderBadge("customer-mic", state.customer.microphone, "room.mic_on", "room.mic_off");
  }

  const remote = new VB.room.RemoteView(
    function () {
      return state.customer;
    },
    function () {
      if (remote.receive === "displaced") {
        return "media.remote.displaced";
      } else if (!state.customer.present) {
        return "room.remote.absent";
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
      renderPresence();
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

  function announce() {
    socket.send({
      type: "media",
      camera: !!state.tracks.video,
      microphone: !!state.tracks.audio,
    });
  }

  function onEvent(ev) {
    const c = state.customer;
    if (ev.type === "participant" && ev.role === "customer") {
      c.present = !!ev.present;
      renderPresence();
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
    } else if (ev.type === "access" && VB.access) {
      VB.access.onEvent(ev); // the customer's link locked or renewed (access.js)
    }
  }

  const events = VB.room.events(page, "advisor", {
    announce: announce,
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
    byId(direction + "-dot").dataset.quality = summary.quality || "";
    if (summary.state !== "connected") {
      return;
    }
    i18n.setText(byId(direction + "-stats"), "room.quality.line", {
      kbps: i18n.number(summary.kbps),
      loss: i18n.number(summary.lossPct, 1),
      rtt: summary.rttMs === null ? "–" : i18n.number(summary.rttMs),
    });
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

  // -- sending (WHIP) -------------------------------------------------------------------------
  // The toggles show what is on now. Switching one on starts the WHIP session if there
  // is none; "start sending" switches both on, "stop sending" both off (and DELETEs).

  let publisher = null;

  function renderSend() {
    const sending = !!(state.tracks.video || state.tracks.audio);
    state.sending = sending;
    sendButton.classList.toggle("danger", sending);
    sendButton.classList.toggle("primary", !sending);
    i18n.setText(
      sendButton.querySelector(".send-label"),
      sending ? "room.send.stop" : "room.send.start"
    );
    VB.room.renderToggles(!!state.tracks.video, !!state.tracks.audio);
    VB.room.renderSelfView(!!state.tracks.video);
    renderPresence();
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
  }

  function stopSending(keepalive, serverGone) {
    switchOff("video", keepalive, serverGone);
    switchOff("audio", keepalive, serverGone);
  }

  async function busy(button, action) {
    button.disabled = true;
    try {
      await action();
    } finally {
      button.disabled = state.finished;
    }
  }

  sendButton.addEventListener("click", function () {
    busy(sendButton, async function () {
      if (state.sending) {
        stopSending();
      } else {
        i18n.setText(sendButton.querySelector(".send-label"), "room.send.starting");
        await switchOn("video");
        await switchOn("audio");
        renderSend();
      }
    });
  });
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
      setStatus("status.elsewhere", "ended");
      showNotice("room.elsewhere");
    } else {
      setStatus("status.ended", "ended");
      showNotice(null);
    }
    sendButton.disabled = true;
    cameraButton.disabled = true;
    micButton.disabled = true;
    endButton.disabled = true;
  }

  VB.room.releaseOnPageHide(function () {
    return [publisher, receiver];
  });

  i18n.onChange(function () {
    renderRemote();
  });

  // -- start ------------------------------------------------------------------------------------

  renderSend();
  renderCustomerMedia();
  renderPresence();
  renderRemote();
  renderLinkState("receive", "closed");
  renderLinkState("send", "closed");
  VB.room.begin(page, socket, function () {
    finish("elsewhere");
  });
  if (receiver) {
    receiver.start();
  } else {
    sendButton.disabled = true;
    renderLinkState("receive", "unavailable");
  }
  scheduleRefresh();
})();
