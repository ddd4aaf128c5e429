// The customer's consultation page. Camera and microphone are OFF until the customer
// switches them on (terms of use); switching off stops the device at once and tells the
// advisor. The advisor's picture arrives by WHEP, which needs no camera; without WebRTC
// the page falls back to chat only. "Beratung verlassen" ends everything at once.
"use strict";

(function () {
  const VB = window.VB;
  const room = document.getElementById("room");
  if (!room || room.dataset.role !== "customer") {
    return;
  }
  const i18n = VB.i18n;

  function byId(id) {
    return document.getElementById(id);
  }
  function meta(name) {
    const m = document.querySelector('meta[name="' + name + '"]');
    return m ? m.content : "";
  }
  const token = meta("vb-token");
  let iceServers = [];
  try {
    iceServers = JSON.parse(meta("vb-ice-servers") || "[]");
  } catch (err) {
    iceServers = [];
  }

  const statusEl = byId("status");
  const presenceEl = byId("presence");
  const noticeEl = byId("notice");
  const privacyEl = byId("privacy");
  const remoteVideo = byId("remote-video");
  const placeholder = byId("remote-placeholder");
  const placeholderText = byId("remote-placeholder-text");
  const selfView = byId("self-view");
  const selfVideo = byId("self-video");
  const unmuteButton = byId("unmute");
  const retryButton = byId("remote-retry");
  const cameraButton = byId("camera");
  const micButton = byId("microphone");
  const chatOnlyButton = byId("chat-only");
  const leaveButton = byId("leave");
  const leftSection = byId("left");
  const leftText = byId("left-text");

  const state = {
    camera: false,
    microphone: false,
    chatOnly: false,
    finished: false,
    tracks: { video: null, audio: null },
    advisor: { present: false, publishing: false, camera: false, microphone: false },
    receive: "closed",
    videoFlowing: false,
    videoSince: 0,
    soundBlocked: false,
    poorSamples: 0,
    noticeKey: null,
  };

  // -- small view helpers -------------------------------------------------------------

  function setStatus(key, kind) {
    i18n.setText(statusEl, key);
    statusEl.dataset.state = kind;
  }

  function showNotice(key, params) {
    state.noticeKey = key;
    i18n.setText(noticeEl, key, params);
    noticeEl.hidden = false;
  }

  function clearNotice(keys) {
    if (state.noticeKey && (!keys || keys.indexOf(state.noticeKey) >= 0)) {
      state.noticeKey = null;
      noticeEl.hidden = true;
    }
  }

  function renderPresence() {
    i18n.setText(presenceEl, state.advisor.present ? "cust.advisor.present" : "cust.advisor.absent");
  }

  function renderToggles() {
    cameraButton.dataset.on = String(state.camera);
    micButton.dataset.on = String(state.microphone);
    i18n.setText(
      cameraButton.querySelector(".toggle-label"),
      state.camera ? "media.camera.turn_off" : "media.camera.turn_on"
    );
    i18n.setText(
      micButton.querySelector(".toggle-label"),
      state.microphone ? "media.mic.turn_off" : "media.mic.turn_on"
    );
    let key = "cust.privacy.off";
    if (state.camera && state.microphone) {
      key = "cust.privacy.both";
    } else if (state.camera) {
      key = "cust.privacy.camera";
    } else if (state.microphone) {
      key = "cust.privacy.mic";
    }
    i18n.setText(privacyEl, key);
    privacyEl.dataset.state = state.camera || state.microphone ? "on" : "off";
    selfView.hidden = !state.tracks.video;
    selfView.parentNode.classList.toggle("with-self", !!state.tracks.video);
  }

  function renderRemote() {
    const now = Date.now();
    const visible =
      state.videoFlowing &&
      remoteVideo.videoWidth > 0 &&
      // a stream without an announced camera (e.g. a tool publishing) shows once steady
      (state.advisor.camera || now - state.videoSince > 3000);
    remoteVideo.hidden = !visible;
    placeholder.hidden = visible;
    // offer "sound on" only when there is something to hear
    unmuteButton.hidden = !(state.soundBlocked && (visible || state.advisor.microphone));
    if (visible) {
      return;
    }
    retryButton.hidden = state.receive !== "displaced";
    let key = "cust.remote.connecting";
    if (state.receive === "displaced") {
      key = "media.remote.displaced";
    } else if (state.receive === "unavailable" || state.receive === "rejected") {
      key = "cust.remote.unavailable";
    } else if (state.receive === "retrying" || state.receive === "disconnected") {
      key = "cust.remote.reconnecting";
    } else if (!state.advisor.publishing) {
      key = "cust.remote.waiting";
    } else if (!state.advisor.camera) {
      key = "cust.remote.camera_off";
    }
    i18n.setText(placeholderText, key);
  }

  // -- events socket and chat -----------------------------------------------------------

  let socket = null;
  const chat = new VB.ChatView(byId("chat"), "customer", function (text) {
    return socket.send({ type: "chat", text: text });
  });

  function announce() {
    if (socket) {
      socket.send({ type: "media", camera: state.camera, microphone: state.microphone });
    }
  }

  function onEvent(ev) {
    if (ev.type === "chat") {
      chat.add(ev);
    } else if (ev.type === "participant" && ev.role === "advisor") {
      state.advisor.present = !!ev.present;
      renderPresence();
    } else if (ev.type === "media" && ev.role === "advisor") {
      const started = !state.advisor.publishing && !!ev.publishing;
      state.advisor.publishing = !!ev.publishing;
      state.advisor.camera = !!ev.camera;
      state.advisor.microphone = !!ev.microphone;
      if (started && receiver) {
        receiver.kick();
      }
      renderRemote();
    } else if (ev.type === "error") {
      chat.notice("chat.rejected", { detail: ev.detail });
    }
  }

  socket = new VB.EventsSocket(room.dataset.events, room.dataset.page, {
    onOpen: function () {
      chat.clear(); // the server replays the history
      setStatus("status.connected", "connected");
      announce(); // what this page does now, also after a reload or a lost connection
    },
    onEvent: onEvent,
    onDown: function () {
      if (!state.finished) {
        setStatus("status.reconnecting", "down");
      }
    },
    onEnded: function () {
      finish("ended");
    },
  });

  // -- receiving the advisor (WHEP) -------------------------------------------------------

  let receiver = null;

  function soundBlocked() {
    state.soundBlocked = true;
    renderRemote();
  }

  function unmute() {
    state.soundBlocked = false;
    unmuteButton.hidden = true;
    remoteVideo.muted = false;
    remoteVideo.play().catch(function () {});
  }

  function startReceiving() {
    if (!VB.rtc.supported || state.chatOnly || state.finished || receiver) {
      return;
    }
    receiver = new VB.rtc.Link({
      mode: "whep",
      url: room.dataset.whep,
      token: token,
      iceServers: iceServers,
      onTrack: function (stream, track) {
        VB.rtc.attach(remoteVideo, stream, soundBlocked);
        track.addEventListener("mute", renderRemote);
        track.addEventListener("unmute", renderRemote);
      },
      onState: function (s) {
        state.receive = s;
        if (s !== "connected") {
          state.videoFlowing = false;
        }
        if (s === "displaced") {
          receiver = null;
        }
        renderRemote();
      },
      onStats: function (summary) {
        if (summary.videoFlowing && !state.videoFlowing) {
          state.videoSince = Date.now();
        }
        state.videoFlowing = summary.videoFlowing;
        state.poorSamples = summary.quality === "poor" ? state.poorSamples + 1 : 0;
        if (state.poorSamples >= 3 && !state.noticeKey) {
          showNotice("quality.weak_hint");
        } else if (state.poorSamples === 0) {
          clearNotice(["quality.weak_hint"]);
        }
        renderRemote();
      },
      expectVideo: function () {
        return state.advisor.publishing && state.advisor.camera;
      },
    });
    receiver.start();
  }

  function stopReceiving(keepalive, serverGone) {
    if (receiver) {
      receiver.stop(keepalive, serverGone);
      receiver = null;
    }
    state.videoFlowing = false;
    remoteVideo.srcObject = null;
    renderRemote();
  }

  remoteVideo.addEventListener("resize", renderRemote);
  unmuteButton.addEventListener("click", unmute);
  retryButton.addEventListener("click", startReceiving);
  // Any tap on the page is the gesture the browser wanted for sound.
  document.addEventListener(
    "click",
    function () {
      if (state.soundBlocked) {
        unmute();
      }
    },
    true
  );

  // -- sending camera / microphone (WHIP) -------------------------------------------------

  let publisher = null;
  const SEND_NOTICES = ["cust.send.failed", "cust.send.unavailable", "media.send.displaced"];

  function ensurePublisher() {
    if (publisher) {
      return;
    }
    publisher = new VB.rtc.Link({
      mode: "whip",
      url: room.dataset.whip,
      token: token,
      iceServers: iceServers,
      maxVideoKbps: 400, // the customer's uplink may be 0.5 Mbit/s (terms of use)
      tracks: function () {
        return state.tracks;
      },
      onState: function (s) {
        if (s === "unavailable" || s === "rejected" || s === "displaced") {
          publisher = null;
          turnEverythingOff();
          showNotice(s === "displaced" ? "media.send.displaced" : "cust.send.unavailable");
        } else if (s === "retrying") {
          showNotice("cust.send.failed");
        } else if (s === "connected") {
          clearNotice(SEND_NOTICES);
        }
      },
    });
    publisher.start();
  }

  function deviceProblem(kind, reason) {
    if (!VB.rtc.canCapture) {
      return "cust.no_capture";
    }
    if (reason === "denied") {
      return kind === "video" ? "cust.device.denied_camera" : "cust.device.denied_mic";
    }
    if (reason === "missing") {
      return kind === "video" ? "cust.device.missing_camera" : "cust.device.missing_mic";
    }
    return reason === "busy" ? "cust.device.busy" : "cust.device.failed";
  }

  function setFlag(kind, on) {
    if (kind === "video") {
      state.camera = on;
    } else {
      state.microphone = on;
    }
  }

  async function switchOn(kind) {
    const button = kind === "video" ? cameraButton : micButton;
    button.disabled = true;
    let track;
    try {
      track = await VB.rtc.capture(kind);
    } catch (err) {
      showNotice(deviceProblem(kind, err.reason));
      return;
    } finally {
      button.disabled = false;
    }
    if (state.finished || state.chatOnly || state.tracks[kind]) {
      track.stop(); // left or switched meanwhile
      return;
    }
    clearNotice();
    state.tracks[kind] = track;
    track.addEventListener("ended", function () {
      // unplugged or revoked: show it as off
      if (state.tracks[kind] === track) {
        switchOff(kind);
      }
    });
    if (kind === "video") {
      selfVideo.srcObject = new MediaStream([track]);
      selfVideo.play().catch(function () {});
    }
    setFlag(kind, true);
    // announce first: the gateway forwards nothing of a kind announced off
    announce();
    renderToggles();
    if (publisher) {
      await publisher.setTrack(kind, track);
    } else {
      ensurePublisher();
    }
  }

  function switchOff(kind) {
    const track = state.tracks[kind];
    state.tracks[kind] = null;
    if (track) {
      track.stop(); // the camera light goes out now
    }
    setFlag(kind, false);
    announce();
    if (kind === "video") {
      selfVideo.srcObject = null;
    }
    if (publisher) {
      if (!state.camera && !state.microphone) {
        publisher.stop(); // nothing left to send: end the WHIP session (DELETE)
        publisher = null;
      } else {
        publisher.setTrack(kind, null);
      }
    }
    renderToggles();
  }

  function turnEverythingOff(keepalive, serverGone) {
    ["video", "audio"].forEach(function (kind) {
      const track = state.tracks[kind];
      state.tracks[kind] = null;
      if (track) {
        track.stop();
      }
    });
    state.camera = false;
    state.microphone = false;
    selfVideo.srcObject = null;
    if (publisher) {
      publisher.stop(keepalive, serverGone);
      publisher = null;
    }
    announce();
    renderToggles();
  }

  cameraButton.addEventListener("click", function () {
    if (state.camera) {
      switchOff("video");
    } else {
      switchOn("video");
    }
  });
  micButton.addEventListener("click", function () {
    if (state.microphone) {
      switchOff("audio");
    } else {
      switchOn("audio");
    }
  });

  // -- chat only, leaving -----------------------------------------------------------------

  function setChatOnly(on, automatic) {
    state.chatOnly = on;
    document.body.classList.toggle("chat-only", on);
    chatOnlyButton.dataset.on = String(on);
    i18n.setText(
      chatOnlyButton.querySelector(".chat-only-label"),
      on ? "cust.video_again" : "cust.chat_only"
    );
    if (on) {
      turnEverythingOff();
      stopReceiving();
      showNotice(automatic ? "cust.chat_only.auto" : "cust.chat_only.active");
      chatOnlyButton.hidden = !!automatic; // nothing to go back to
    } else {
      clearNotice(["cust.chat_only.active"]);
      startReceiving();
    }
  }

  chatOnlyButton.addEventListener("click", function () {
    setChatOnly(!state.chatOnly, false);
  });

  function finish(why) {
    if (state.finished) {
      return;
    }
    const serverGone = why === "ended";
    turnEverythingOff(true, serverGone); // also tells the advisor: camera and microphone off
    state.finished = true;
    stopReceiving(true, serverGone);
    socket.close();
    chat.setEnabled(false);
    clearNotice();
    document.body.classList.add("left-room");
    leftSection.hidden = false;
    if (why === "ended") {
      setStatus("status.ended", "ended");
      i18n.setText(leftText, "cust.ended");
      leftSection.querySelector("a").hidden = true;
    } else if (why === "elsewhere") {
      setStatus("status.elsewhere", "ended");
      i18n.setText(leftText, "cust.elsewhere");
      i18n.setText(leftSection.querySelector("a span"), "app.continue_here");
    } else {
      setStatus("status.left", "ended");
      i18n.setText(leftText, "cust.left");
    }
  }

  leaveButton.addEventListener("click", function () {
    finish("left");
  });

  window.addEventListener("pagehide", function () {
    // closing the tab or navigating away: end the WebRTC sessions on the server too
    if (!state.finished) {
      if (publisher) {
        publisher.stop(true);
      }
      if (receiver) {
        receiver.stop(true);
      }
    }
  });

  // -- start --------------------------------------------------------------------------------

  renderToggles();
  renderPresence();
  renderRemote();
  VB.rtc.claimTab(room.dataset.page, function () {
    finish("elsewhere");
  });
  setStatus("status.connecting", "connecting");
  socket.connect();
  if (!VB.rtc.supported) {
    setChatOnly(true, true);
  } else {
    if (!VB.rtc.canCapture) {
      // e.g. a page not served over https: the advisor is still seen and heard
      cameraButton.disabled = true;
      micButton.disabled = true;
      showNotice("cust.no_capture");
    }
    startReceiving();
  }
})();
