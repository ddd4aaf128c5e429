// The customer's consultation page. Camera and microphone are OFF until the customer
// switches them on (terms of use); switching off stops the device at once and tells the
// advisor. The advisor's picture arrives by WHEP, which needs no camera; without WebRTC
// the page falls back to chat only. "Beratung verlassen" ends everything at once.
"use strict";

(function () {
  const VB = window.VB;
  const page = VB.room.params("customer");
  if (!page) {
    return;
  }
  const i18n = VB.i18n;
  const byId = VB.room.byId;
  const setStatus = VB.room.setStatus;

  const presenceEl = byId("presence");
  const noticeEl = byId("notice");
  const privacyEl = byId("privacy");
  const selfVideo = byId("self-video");
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
    poorSamples: 0,
    noticeKey: null,
  };

  // -- what the page says: one state machine ---------------------------------------------
  // Each state names the status line, the line about the advisor (null: none) and the
  // text in place of the advisor's picture. "away": the advisor was here and is gone for
  // now (a reload, a lost connection); the consultation goes on.
  //
  //   state          status line            advisor line          picture placeholder
  const VIEWS = {
    connecting: ["status.connecting", "connecting", null, "cust.remote.connecting"],
    waiting: ["status.connected", "connected", "cust.advisor.absent", "cust.remote.absent"],
    present: ["status.connected", "connected", "cust.advisor.present", "cust.remote.waiting"],
    live: ["status.connected", "connected", "cust.advisor.present", "cust.remote.connecting"],
    away: ["status.connected", "connected", "cust.advisor.away", "cust.remote.away"],
    reconnecting: ["status.reconnecting", "down", null, "cust.remote.reconnecting"],
    left: ["status.left", "ended", null, null],
    ended: ["status.ended", "ended", null, null],
    elsewhere: ["status.elsewhere", "ended", null, null],
  };
  // The transitions (events: the socket's open/down; the advisor joins, goes, starts or
  // stops sending; the customer leaves; the consultation ends; another tab takes over).
  // left, ended and elsewhere are final: this page shows its end message from then on.
  const FINAL = { leave: "left", end: "ended", elsewhere: "elsewhere" };
  const TRANSITIONS = {
    connecting: Object.assign({ open: "waiting" }, FINAL),
    waiting: Object.assign(
      { down: "reconnecting", advisor_in: "present", advisor_on: "live" },
      FINAL
    ),
    present: Object.assign(
      { down: "reconnecting", advisor_out: "away", advisor_on: "live" },
      FINAL
    ),
    live: Object.assign(
      { down: "reconnecting", advisor_out: "away", advisor_off: "present" },
      FINAL
    ),
    away: Object.assign({ down: "reconnecting", advisor_in: "present", advisor_on: "live" }, FINAL),
    reconnecting: Object.assign({ open: "waiting" }, FINAL),
    left: {},
    ended: {},
    elsewhere: {},
  };
  // The advisor's display name ("Frau Schmidt", from the account: data-advisor-name)
  // replaces the neutral "Ihre Ansprechperson" in the lines about the advisor; without
  // one the neutral keys stay.
  const advisorName = page.room.dataset.advisorName || "";
  const NAMED = {
    "cust.advisor.absent": "cust.named.absent",
    "cust.advisor.present": "cust.named.present",
    "cust.advisor.away": "cust.named.away",
    "cust.remote.waiting": "cust.named.remote_waiting",
    "cust.remote.camera_off": "cust.named.remote_camera_off",
    "cust.remote.absent": "cust.named.remote_absent",
    "cust.remote.away": "cust.named.remote_away",
  };
  // [key, params] for a line about the advisor
  function named(key) {
    if (advisorName && key && NAMED[key]) {
      return [NAMED[key], { name: advisorName }];
    }
    return [key, undefined];
  }

  const machine = new VB.room.Machine(TRANSITIONS, "connecting", function () {
    renderState();
  });

  // -- where the customer is: the device check, the waiting room, the room ---------------
  // A second machine, apart from the lines above: "joining" until the gateway says
  // whether the advisor lets people in themselves (the first "admission" event), "lobby"
  // while the customer waits to be let in (no media, chat only), then "room". The body's
  // class shows the part of the page for the stage (style.css).
  const STAGES = {
    check: { join: "joining" },
    joining: { wait: "lobby", admit: "room" },
    lobby: { admit: "room" },
    room: { wait: "lobby" },
  };
  const stage = new VB.room.Machine(STAGES, "check", function (s) {
    Object.keys(STAGES).forEach(function (name) {
      document.body.classList.toggle("stage-" + name, name === s);
    });
    byId("lobby").hidden = s !== "lobby";
  });

  // -- small view helpers -------------------------------------------------------------

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

  function renderState() {
    const view = VIEWS[machine.state];
    setStatus(view[0], view[1]);
    const line = named(view[2]);
    VB.room.setLine(presenceEl, line[0], line[1]);
    renderRemote();
  }

  function renderToggles() {
    VB.room.renderToggles(state.camera, state.microphone);
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
    VB.room.renderSelfView(!!state.tracks.video);
  }

  const remote = new VB.room.RemoteView(
    function () {
      return state.advisor;
    },
    function () {
      return named(placeholderKey());
    }
  );
  function placeholderKey() {
    const receive = remote.receive;
    if (receive === "displaced") {
      return "media.remote.displaced";
    } else if (receive === "unavailable" || receive === "rejected") {
      return "cust.remote.unavailable";
    } else if (receive === "retrying" || receive === "disconnected") {
      return "cust.remote.reconnecting";
    } else if (machine.is("live") && !state.advisor.camera) {
      return "cust.remote.camera_off";
    } else if (machine.is("present") && state.advisor.camera) {
      return "cust.remote.connecting"; // switched on, the picture is on its way
    }
    return VIEWS[machine.state][3] || "cust.remote.connecting";
  }
  const renderRemote = remote.render;

  // -- events socket and chat -----------------------------------------------------------

  function announce() {
    socket.send({ type: "media", camera: state.camera, microphone: state.microphone });
  }

  // -- the telephone (docs/phone.md) ----------------------------------------------------
  // While a phone carries the customer's audio this page neither sends its microphone nor
  // plays the advisor's sound (no echo, no double audio); the camera keeps working. When
  // the call ends, the microphone and the sound are as they were before.
  const phoneStatus = byId("phone-status");
  let micBeforePhone = null; // null: no phone; else the microphone's state before it

  function keepMuted() {
    if (micBeforePhone !== null && !remote.video.muted) {
      remote.video.muted = true; // a new track or "unmute" must not bring the sound back
    }
  }
  remote.video.addEventListener("volumechange", keepMuted);
  remote.video.addEventListener("play", keepMuted);

  function onPhone(active) {
    if (active && micBeforePhone === null) {
      micBeforePhone = state.microphone;
      if (state.microphone) {
        switchOff("audio");
      }
      micButton.disabled = true;
      remote.video.muted = true;
    } else if (!active && micBeforePhone !== null) {
      const before = micBeforePhone;
      micBeforePhone = null;
      micButton.disabled = false;
      remote.video.muted = false;
      if (before && !state.microphone) {
        switchOn("audio");
      }
    }
    if (phoneStatus) {
      phoneStatus.hidden = !active;
    }
    // "sees and hears you only when you switch on" is not the whole truth during a call:
    // the phone's status line says what is on instead
    privacyEl.hidden = active;
  }

  function onEvent(ev) {
    if (ev.type === "phone") {
      onPhone(!!ev.active);
    } else if (ev.type === "admission" && ev.role === "customer") {
      onAdmission(!!ev.admitted);
    } else if (ev.type === "participant" && ev.role === "advisor") {
      // "the advisor arrives": a chime when they come, not when the page learns they
      // are here already (the first event after connecting)
      if (state.advisorKnown && !state.advisor.present && ev.present && VB.sounds) {
        VB.sounds.play("arrive");
      }
      state.advisorKnown = true;
      state.advisor.present = !!ev.present;
      machine.fire(ev.present ? "advisor_in" : "advisor_out");
    } else if (ev.type === "media" && ev.role === "advisor") {
      const started = !state.advisor.publishing && !!ev.publishing;
      state.advisor.publishing = !!ev.publishing;
      state.advisor.camera = !!ev.camera;
      state.advisor.microphone = !!ev.microphone;
      if (started && receiver) {
        receiver.kick();
      }
      // sending something counts only while the advisor is here (a stream may outlive
      // the advisor's page by a moment)
      const sending = state.advisor.publishing && (state.advisor.camera || state.advisor.microphone);
      machine.fire(sending && state.advisor.present ? "advisor_on" : "advisor_off");
      renderRemote();
    }
  }

  // Let in (or still waiting): media only in the room (the gateway refuses it before).
  function onAdmission(admitted) {
    const was = stage.state;
    stage.fire(admitted ? "admit" : "wait");
    if (stage.is("room")) {
      if (was === "lobby" && VB.sounds) {
        VB.sounds.play("arrive");
      }
      if (!state.chatOnly) {
        startReceiving();
      }
    } else if (stage.is("lobby")) {
      turnEverythingOff();
      stopReceiving();
    }
  }

  const events = VB.room.events(page, "customer", {
    typingText: function () {
      return advisorName ? ["chat.typing.named", { name: advisorName }] : "chat.typing.advisor";
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
      finish("ended");
    },
  });
  const socket = events.socket;
  const chat = events.chat;

  // -- receiving the advisor (WHEP) -------------------------------------------------------

  let receiver = null;

  function startReceiving() {
    if (!VB.rtc.supported || state.chatOnly || state.finished || receiver || !stage.is("room")) {
      return;
    }
    receiver = VB.room.link(page, "whep", {
      onTrack: remote.onTrack,
      onState: function (s) {
        remote.setReceive(s);
        if (s === "displaced") {
          receiver = null;
        }
        renderRemote();
      },
      onStats: function (summary) {
        remote.setFlowing(summary.videoFlowing);
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
    remote.flowing = false;
    remote.video.srcObject = null;
    renderRemote();
  }

  remote.retryButton.addEventListener("click", startReceiving);

  // -- sending camera / microphone (WHIP) -------------------------------------------------

  let publisher = null;
  const SEND_NOTICES = ["cust.send.failed", "cust.send.unavailable", "media.send.displaced"];

  function ensurePublisher() {
    if (publisher) {
      return;
    }
    publisher = VB.room.link(page, "whip", {
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
    let track;
    // busy, but not disabled: a disabled button loses the keyboard focus (to <body>)
    button.setAttribute("aria-busy", "true");
    try {
      track = await VB.rtc.capture(kind);
    } catch (err) {
      showNotice(deviceProblem(kind, err.reason));
      return;
    } finally {
      button.removeAttribute("aria-busy");
    }
    if (state.finished || state.chatOnly || state.tracks[kind]) {
      track.stop(); // left or switched meanwhile
      return;
    }
    clearNotice();
    VB.room.useTrack(state.tracks, kind, track, switchOff);
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
    if (cameraButton.getAttribute("aria-busy")) {
      return; // the browser is still asking for the camera
    }
    if (state.camera) {
      switchOff("video");
    } else {
      switchOn("video");
    }
  });
  micButton.addEventListener("click", function () {
    if (micButton.getAttribute("aria-busy")) {
      return;
    }
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
      startReceiving(); // in the room only
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
      machine.fire("end");
      i18n.setText(leftText, "cust.ended");
      leftSection.querySelector("a").hidden = true;
    } else if (why === "elsewhere") {
      machine.fire("elsewhere");
      i18n.setText(leftText, "cust.elsewhere");
      i18n.setText(leftSection.querySelector("a span"), "app.continue_here");
    } else {
      machine.fire("leave");
      i18n.setText(leftText, "cust.left");
    }
    if (VB.endScreen && why !== "elsewhere") {
      VB.endScreen.show(why); // what was deleted, whom to ask, a rating (end.js)
    }
    // the controls just vanished: keyboard and screen reader users land on the message
    // (the end screen follows it in reading order)
    leftText.tabIndex = -1;
    leftText.focus();
  }

  leaveButton.addEventListener("click", function () {
    // with documents there, documents.js asks first and reminds to save them
    const leave = function () {
      finish("left");
    };
    return VB.documents ? VB.documents.beforeLeave(leave) : leave();
  });

  VB.room.releaseOnPageHide(function () {
    return state.finished ? [] : [publisher, receiver];
  });

  // -- start --------------------------------------------------------------------------------

  renderToggles();
  renderState();
  // The device check first (devices.js; straight on where nothing can be captured), then
  // the consultation: the events socket tells whether the customer waits to be let in.
  VB.devices.check(function () {
    stage.fire("join");
    VB.room.begin(page, socket, function () {
      finish("elsewhere");
    });
    if (!VB.rtc.supported) {
      setChatOnly(true, true);
    } else if (!VB.rtc.canCapture) {
      // e.g. a page not served over https: the advisor is still seen and heard
      cameraButton.disabled = true;
      micButton.disabled = true;
      showNotice("cust.no_capture");
    }
    if (!page.room.dataset.waitingRoom) {
      onAdmission(true); // no waiting room: straight in
    }
    // with one, receiving starts once the gateway says the customer is in (onAdmission)
  });
})();
