// Screen sharing (docs/web.md "Screen sharing"). The advisor's page shares a screen with
// getDisplayMedia as a second WHIP stream (?stream=screen): sharp text rather than
// motion (contentHint "detail", at most 1280x720 at 5 frames a second and 600 kbit/s, so
// it fits the customer's 1 Mbit/s downlink beside the advisor's voice). The customer's
// page receives it over a second WHEP link when the "screen" event says it is shared,
// and shows it over the advisor's picture with the line saying whose screen it is.
"use strict";

(function () {
  const VB = (window.VB = window.VB || {});
  const i18n = VB.i18n;
  const MAX_KBPS = 600;
  const MAX_FPS = 5;

  function byId(id) {
    return document.getElementById(id);
  }

  function screenUrl(p, mode) {
    return p.room.dataset[mode] + "?stream=screen";
  }

  // -- the advisor shares ----------------------------------------------------------------

  function advisor(p) {
    const button = byId("share-screen");
    const status = byId("screen-status");
    if (!button || !navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) {
      return; // phones and old browsers cannot share a screen: no button
    }
    button.hidden = false;
    let track = null;
    let link = null;

    function render(on, key) {
      button.dataset.on = on ? "true" : "false";
      button.setAttribute("aria-pressed", on ? "true" : "false");
      i18n.setText(button.querySelector(".toggle-label"), on ? "screen.stop" : "screen.share");
      status.hidden = !key;
      if (key) {
        i18n.setText(status, key);
      }
    }

    function stop(key) {
      if (link) {
        link.stop();
        link = null;
      }
      if (track) {
        track.stop();
        track = null;
      }
      render(false, key || null);
    }

    async function tune(sender) {
      // keep the text sharp: lower the frame rate, never the resolution, when short of bits
      try {
        const params = sender.getParameters();
        params.degradationPreference = "maintain-resolution";
        (params.encodings || []).forEach(function (e) {
          e.maxBitrate = MAX_KBPS * 1000;
          e.maxFramerate = MAX_FPS;
        });
        await sender.setParameters(params);
      } catch (err) {
        // the capture constraints cap the frame rate anyway
      }
    }

    async function start() {
      let stream;
      try {
        stream = await navigator.mediaDevices.getDisplayMedia({
          video: {
            width: { max: 1280 },
            height: { max: 720 },
            frameRate: { ideal: MAX_FPS, max: MAX_FPS },
          },
          audio: false,
        });
      } catch (err) {
        render(false, err && err.name === "NotAllowedError" ? "screen.denied" : "screen.failed");
        return;
      }
      track = stream.getVideoTracks()[0];
      if (!track) {
        render(false, "screen.failed");
        return;
      }
      if ("contentHint" in track) {
        track.contentHint = "detail"; // slides and documents: sharpness over motion
      }
      // the browser's own "stop sharing" bar ends the track
      track.addEventListener("ended", function () {
        stop(null);
      });
      link = VB.room.link(p, "whip", {
        url: screenUrl(p, "whip"),
        tracks: function () {
          return { video: track, audio: null };
        },
        maxVideoKbps: MAX_KBPS,
        onState: function (state) {
          if (state === "connected" && link && link.transceivers.video) {
            tune(link.transceivers.video.sender);
            render(true, "screen.sharing");
          } else if (state === "rejected" || state === "unavailable" || state === "displaced") {
            stop("screen.failed");
          }
        },
      });
      render(true, null);
      link.start();
    }

    button.addEventListener("click", function () {
      if (track) {
        stop(null);
      } else {
        start();
      }
    });
    window.addEventListener("pagehide", function () {
      stop(null);
    });
  }

  // -- the customer watches ----------------------------------------------------------------

  function customer(p) {
    const box = byId("screen-share");
    const video = byId("screen-video");
    if (!box || !video || !VB.rtc.supported) {
      return null;
    }
    let link = null;

    function show(on) {
      box.hidden = !on;
      box.closest(".stage").classList.toggle("sharing-screen", on);
    }

    video.addEventListener("resize", function () {
      show(!!link && video.videoWidth > 0);
    });

    function watch(sharing) {
      if (sharing && !link) {
        link = VB.room.link(p, "whep", {
          url: screenUrl(p, "whep"),
          onTrack: function (stream, track) {
            if (track.kind === "video") {
              video.srcObject = new MediaStream([track]);
              video.play().catch(function () {});
            }
          },
        });
        link.start();
      } else if (!sharing && link) {
        link.stop();
        link = null;
        video.srcObject = null;
        show(false);
      }
    }

    window.addEventListener("pagehide", function () {
      watch(false);
    });
    // Leaving and "chat only" end every picture the customer receives (customer.js shows
    // the "left" card or marks the chat-only button); the screen goes with them, and
    // comes back with the next "screen" event after re-joining.
    let shared = false;
    function follow() {
      const left = byId("left");
      const chatOnly = byId("chat-only");
      const away =
        (left && !left.hidden) || (chatOnly && chatOnly.dataset.on === "true");
      watch(shared && !away);
    }
    const observer = new MutationObserver(follow);
    ["left", "chat-only"].forEach(function (id) {
      const el = byId(id);
      if (el) {
        observer.observe(el, { attributes: true, attributeFilter: ["hidden", "data-on"] });
      }
    });
    return function (sharing) {
      shared = sharing;
      follow();
    };
  }

  const advisorPage = VB.room.params("advisor");
  const customerPage = VB.room.params("customer");
  let watch = null;
  if (advisorPage) {
    advisor(advisorPage);
  } else if (customerPage) {
    watch = customer(customerPage);
  }

  VB.screen = {
    // the "screen" event (room.js passes it on), also in the snapshot after a reconnect
    onEvent: function (ev) {
      if (watch && ev.role === "advisor") {
        watch(!!ev.sharing);
      }
    },
    // the consultation ended or the customer left
    stop: function () {
      if (watch) {
        watch(false);
      }
    },
  };
})();
