// What the two consultation pages (advisor-room.js, customer.js) share: the page's
// parameters from <meta> and data-* attributes, the status line, the events socket with
// the chat, the other side's picture (WHEP) with its placeholder and "sound on", the
// camera/microphone toggles and the self view, and releasing the WebRTC sessions when
// the page goes away. Each page keeps its own texts and decisions.
"use strict";

(function () {
  const VB = (window.VB = window.VB || {});
  const i18n = VB.i18n;

  function byId(id) {
    return document.getElementById(id);
  }

  function meta(name) {
    const m = document.querySelector('meta[name="' + name + '"]');
    return m ? m.content : "";
  }

  // The page's parameters if this is the given role's consultation page, else null.
  function params(role) {
    const room = byId("room");
    if (!room || room.dataset.role !== role) {
      return null;
    }
    let iceServers = [];
    try {
      iceServers = JSON.parse(meta("vb-ice-servers") || "[]");
    } catch (err) {
      iceServers = [];
    }
    return {
      room: room,
      token: meta("vb-token"),
      csrf: meta("csrf-token"),
      iceServers: iceServers,
    };
  }

  // A WHIP or WHEP link to this page's endpoint (data-whip / data-whep), with the
  // participant token and the ICE servers; options: what VB.rtc.Link takes besides.
  function link(p, mode, options) {
    const config = {
      mode: mode,
      url: p.room.dataset[mode],
      token: p.token,
      iceServers: p.iceServers,
    };
    Object.keys(options).forEach(function (name) {
      config[name] = options[name];
    });
    return new VB.rtc.Link(config);
  }

  function setStatus(key, kind) {
    const statusEl = byId("status");
    i18n.setText(statusEl, key);
    statusEl.dataset.state = kind;
  }

  // A page's state machine, in the manner of h11's _state.py: `table` maps every state
  // to the events it accepts and the state each one leads to. An event that a state does
  // not list leaves it as it is (a late presence event after the end changes nothing),
  // so what the page says can never be two states at once. render(state) runs on every
  // change; the page draws its status lines from the state alone.
  class Machine {
    constructor(table, initial, render) {
      this.table = table;
      this.state = initial;
      this.render = render;
    }

    fire(event) {
      const next = (this.table[this.state] || {})[event];
      if (next && next !== this.state) {
        this.state = next;
        this.render(next);
      }
      return this.state;
    }

    is(state) {
      return this.state === state;
    }
  }

  // One line that screen readers announce when it changes (role=status, polite), and
  // that is hidden when it has nothing to say.
  function setLine(el, key, params) {
    el.hidden = !key;
    if (key) {
      i18n.setText(el, key, params);
    }
  }

  // The events socket and the chat. hooks: announce() (what this page does now, also
  // after a reload or a lost connection), fire(event) for the socket's "open" and
  // "down", onEvent(ev) for presence, media and admission events, finished(), onEnded(),
  // typingText(role): what "… schreibt" says.
  function events(p, role, hooks) {
    const chat = new VB.ChatView(
      byId("chat"),
      role,
      function (text) {
        return socket.send({ type: "chat", text: text });
      },
      {
        typing: function () {
          socket.send({ type: "typing" });
        },
        typingText: hooks.typingText,
      }
    );
    const socket = new VB.EventsSocket(p.room.dataset.events, p.room.dataset.page, {
      onOpen: function () {
        chat.clear(); // the server replays the history
        hooks.fire("open");
        hooks.announce();
      },
      onEvent: function (ev) {
        if (ev.type === "chat") {
          if (chat.add(ev) && VB.sounds) {
            VB.sounds.play("message");
          }
        } else if (ev.type === "typing") {
          chat.showTyping(ev.role);
        } else if (ev.type === "error") {
          chat.notice("chat.rejected", { detail: ev.detail });
        } else if (ev.type === "notice" && ev.code === "capacity") {
          if (ev.role === role) {
            // the gateway has no capacity to convert this for us now (docs/ops.md)
            chat.notice(ev.kind === "audio" ? "notice.capacity.audio" : "notice.capacity.video");
          }
        } else {
          if (ev.type === "form" && VB.forms) {
            VB.forms.onEvent(ev); // the forms card (forms.js)
          }
          if (ev.type === "document" && VB.documents) {
            VB.documents.onEvent(ev); // the documents card (documents.js)
          }
          if (ev.type === "screen" && VB.screen) {
            VB.screen.onEvent(ev); // the advisor's shared screen (screen.js)
          }
          hooks.onEvent(ev);
        }
      },
      onDown: function () {
        hooks.fire("down");
      },
      onEnded: function () {
        if (VB.screen) {
          VB.screen.stop();
        }
        hooks.onEnded();
      },
    });
    return { socket: socket, chat: chat };
  }

  // Claim this tab for the consultation (an older tab stands down: onElsewhere), and
  // connect the events socket.
  function begin(p, socket, onElsewhere) {
    VB.rtc.claimTab(p.room.dataset.page, onElsewhere);
    socket.connect();
  }

  // Full screen and picture-in-picture for the other side's picture, each offered only
  // where the browser has it and while there is a picture. Full screen takes the whole
  // stage (the labels and the self view stay); on an iPhone, where only a <video> can go
  // full screen, the video does.
  class StageTools {
    constructor(video) {
      this.video = video;
      this.stage = video.parentNode;
      this.fullscreenButton = byId("fullscreen");
      this.pipButton = byId("pip");
      if (!this.fullscreenButton || !this.pipButton) {
        this.fullscreenButton = this.pipButton = null;
        return;
      }
      this.canFullscreen = !!(
        (document.fullscreenEnabled && this.stage.requestFullscreen) ||
        video.webkitEnterFullscreen
      );
      this.canPip = !!(document.pictureInPictureEnabled && video.requestPictureInPicture);
      const self = this;
      this.fullscreenButton.addEventListener("click", function () {
        self.toggleFullscreen();
      });
      this.pipButton.addEventListener("click", function () {
        self.togglePip();
      });
      document.addEventListener("fullscreenchange", function () {
        self.renderLabels();
      });
      video.addEventListener("enterpictureinpicture", function () {
        self.renderLabels();
      });
      video.addEventListener("leavepictureinpicture", function () {
        self.renderLabels();
      });
    }

    render(visible) {
      if (!this.fullscreenButton) {
        return;
      }
      const full = document.fullscreenElement === this.stage;
      this.fullscreenButton.hidden = !(this.canFullscreen && (visible || full));
      this.pipButton.hidden = !(this.canPip && (visible || this.inPip()));
      this.renderLabels();
    }

    inPip() {
      return document.pictureInPictureElement === this.video;
    }

    renderLabels() {
      const full = document.fullscreenElement === this.stage;
      i18n.setText(
        this.fullscreenButton.querySelector(".stage-tool-label"),
        full ? "media.fullscreen_exit" : "media.fullscreen"
      );
      i18n.setText(
        this.pipButton.querySelector(".stage-tool-label"),
        this.inPip() ? "media.pip_exit" : "media.pip"
      );
    }

    toggleFullscreen() {
      if (document.fullscreenElement) {
        document.exitFullscreen().catch(function () {});
      } else if (document.fullscreenEnabled && this.stage.requestFullscreen) {
        this.stage.requestFullscreen().catch(function () {});
      } else if (this.video.webkitEnterFullscreen) {
        this.video.webkitEnterFullscreen();
      }
    }

    togglePip() {
      if (this.inPip()) {
        document.exitPictureInPicture().catch(function () {});
      } else {
        this.video.requestPictureInPicture().catch(function () {});
      }
    }
  }

  // The other side's picture: shown once video flows and has a size, and once the
  // camera is announced (a stream without one, e.g. a tool publishing, shows once
  // steady); otherwise the placeholder with placeholderKey()'s text. peer(): the other
  // side's { camera, microphone }. "Sound on" is offered when the browser kept the sound
  // off and there is something to hear; any tap on the page is the gesture it wanted.
  class RemoteView {
    constructor(peer, placeholderKey) {
      this.peer = peer;
      this.placeholderKey = placeholderKey;
      this.video = byId("remote-video");
      this.placeholder = byId("remote-placeholder");
      this.placeholderText = byId("remote-placeholder-text");
      this.unmuteButton = byId("unmute");
      this.retryButton = byId("remote-retry");
      this.tools = new StageTools(this.video);
      this.receive = "closed";
      this.flowing = false;
      this.since = 0;
      this.soundBlocked = false;
      this.render = this.render.bind(this);
      this.unmute = this.unmute.bind(this);
      this.onTrack = this.onTrack.bind(this);
      const self = this;
      this.video.addEventListener("resize", this.render);
      this.unmuteButton.addEventListener("click", this.unmute);
      document.addEventListener(
        "click",
        function () {
          if (self.soundBlocked) {
            self.unmute();
          }
        },
        true
      );
    }

    render() {
      const peer = this.peer();
      const visible =
        this.flowing &&
        this.video.videoWidth > 0 &&
        (peer.camera || Date.now() - this.since > 3000);
      this.video.hidden = !visible;
      this.placeholder.hidden = visible;
      this.tools.render(visible);
      this.unmuteButton.hidden = !(this.soundBlocked && (visible || peer.microphone));
      if (visible) {
        return;
      }
      this.retryButton.hidden = this.receive !== "displaced";
      // a key, or [key, params] (the customer's page names the advisor)
      const text = [].concat(this.placeholderKey());
      i18n.setText(this.placeholderText, text[0], text[1]);
    }

    unmute() {
      this.soundBlocked = false;
      this.unmuteButton.hidden = true;
      this.video.muted = false;
      this.video.play().catch(function () {});
    }

    // The WHEP link's onTrack.
    onTrack(stream, track) {
      const self = this;
      if (VB.devices) {
        VB.devices.applySpeaker(this.video); // the speaker chosen in the device check
      }
      VB.rtc.attach(this.video, stream, function () {
        self.soundBlocked = true;
        self.render();
      });
      track.addEventListener("mute", this.render);
      track.addEventListener("unmute", this.render);
    }

    // From the WHEP link's onState and onStats (the page renders afterwards).
    setReceive(s) {
      this.receive = s;
      if (s !== "connected") {
        this.flowing = false;
      }
    }

    setFlowing(flowing) {
      if (flowing && !this.flowing) {
        this.since = Date.now();
      }
      this.flowing = flowing;
    }
  }

  // The camera and microphone toggles show what is on now.
  function renderToggles(cameraOn, micOn) {
    const cameraButton = byId("camera");
    const micButton = byId("microphone");
    cameraButton.dataset.on = String(cameraOn);
    micButton.dataset.on = String(micOn);
    i18n.setText(
      cameraButton.querySelector(".toggle-label"),
      cameraOn ? "media.camera.turn_off" : "media.camera.turn_on"
    );
    i18n.setText(
      micButton.querySelector(".toggle-label"),
      micOn ? "media.mic.turn_off" : "media.mic.turn_on"
    );
  }

  function renderSelfView(on) {
    const selfView = byId("self-view");
    selfView.hidden = !on;
    selfView.parentNode.classList.toggle("with-self", on);
  }

  // A captured track becomes tracks[kind]; the camera's shows in the self view. When the
  // device ends it (unplugged, revoked) while still in use, onEnded(kind) shows it off.
  function useTrack(tracks, kind, track, onEnded) {
    tracks[kind] = track;
    track.addEventListener("ended", function () {
      if (tracks[kind] === track) {
        onEnded(kind);
      }
    });
    if (kind === "video") {
      const selfVideo = byId("self-video");
      selfVideo.srcObject = new MediaStream([track]);
      selfVideo.play().catch(function () {});
    }
  }

  // Closing the tab or navigating away: end the WebRTC sessions on the server too.
  // links(): the WHIP/WHEP links to stop now (null for none).
  function releaseOnPageHide(links) {
    window.addEventListener("pagehide", function () {
      links().forEach(function (l) {
        if (l) {
          l.stop(true);
        }
      });
    });
  }

  VB.room = {
    byId: byId,
    params: params,
    link: link,
    setStatus: setStatus,
    setLine: setLine,
    Machine: Machine,
    events: events,
    begin: begin,
    RemoteView: RemoteView,
    renderToggles: renderToggles,
    renderSelfView: renderSelfView,
    useTrack: useTrack,
    releaseOnPageHide: releaseOnPageHide,
  };
})();
