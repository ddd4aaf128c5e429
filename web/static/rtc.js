// WebRTC for both consultation pages: WHIP publish (RFC 9725), WHEP receive, DELETE on
// leave, automatic re-connection, and a getStats() summary for the quality display.
//
// The server does not trickle ICE: the offer is sent once ICE gathering has completed
// (or after a short wait), and the answer carries all of the server's candidates.
// Codec preferences are left alone, so the browser offers VP8 and H.264 both.
// Requests go to same-origin paths only and carry the participant token as a bearer
// token (the page gets it from <meta name="vb-token">, never from a URL).
"use strict";

(function () {
  const VB = (window.VB = window.VB || {});

  const GATHER_TIMEOUT_MS = 2500;
  const DISCONNECT_GRACE_MS = 4000; // ICE "disconnected" often recovers by itself
  const STALL_MS = 6000; // expected video but no bytes for this long: reconnect
  const BACKOFF_MS = [1000, 2000, 4000, 8000, 15000];
  const STATS_INTERVAL_MS = 1000;

  const supported = typeof window.RTCPeerConnection === "function";
  const canCapture = !!(
    navigator.mediaDevices && typeof navigator.mediaDevices.getUserMedia === "function"
  );

  class LinkError extends Error {
    constructor(status, detail) {
      super(detail || "HTTP " + status);
      this.status = status;
      this.detail = detail || "";
    }
  }

  // A same-origin URL for a path or a Location header (RFC 9725 §4.2: it may be
  // relative). An absolute one naming another origin is re-rooted on ours: the CSP
  // allows nothing else, and the server is the same.
  function ownUrl(ref, base) {
    const url = new URL(ref, base || window.location.href);
    if (url.origin !== window.location.origin) {
      return new URL(url.pathname + url.search, window.location.origin).href;
    }
    return url.href;
  }

  function gatheringComplete(pc, timeoutMs) {
    if (pc.iceGatheringState === "complete") {
      return Promise.resolve();
    }
    return new Promise(function (resolve) {
      const timer = window.setTimeout(done, timeoutMs);
      function check() {
        if (pc.iceGatheringState === "complete") {
          done();
        }
      }
      function done() {
        window.clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      }
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  async function problemDetail(resp) {
    try {
      const type = resp.headers.get("Content-Type") || "";
      if (type.indexOf("json") >= 0) {
        const body = await resp.json();
        return body.detail || body.title || "";
      }
      return (await resp.text()).slice(0, 200);
    } catch (err) {
      return "";
    }
  }

  // -- capture ------------------------------------------------------------------------

  // One track of the given kind ("video" or "audio"). Errors are classified for the
  // page: denied, missing, busy, failed.
  async function capture(kind) {
    if (!canCapture) {
      const err = new Error("getUserMedia is not available");
      err.reason = "missing";
      throw err;
    }
    const constraints =
      kind === "video"
        ? {
            video: {
              width: { ideal: 640 },
              height: { ideal: 480 },
              frameRate: { ideal: 24, max: 30 },
            },
          }
        : { audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true } };
    // the device chosen in the device check (devices.js), if any
    const chosen = VB.devices && VB.devices.deviceId(kind);
    if (chosen) {
      constraints[kind].deviceId = chosen;
    }
    try {
      const stream = VB.devices
        ? await VB.devices.withoutGone(constraints)
        : await navigator.mediaDevices.getUserMedia(constraints);
      return stream.getTracks()[0];
    } catch (err) {
      const name = err && err.name;
      if (name === "NotAllowedError" || name === "SecurityError") {
        err.reason = "denied";
      } else if (name === "NotFoundError" || name === "OverconstrainedError") {
        err.reason = "missing";
      } else if (name === "NotReadableError" || name === "AbortError") {
        err.reason = "busy";
      } else {
        err.reason = "failed";
      }
      throw err;
    }
  }

  // Show a stream in a <video>. Browsers may refuse to autoplay sound without a user
  // gesture: then play muted and let the page offer a "sound on" button.
  function attach(video, stream, onSoundBlocked) {
    if (video.srcObject !== stream) {
      video.srcObject = stream;
    }
    const played = video.play();
    if (played && played.catch) {
      played.catch(function (err) {
        if (err && err.name === "NotAllowedError" && !video.muted) {
          video.muted = true;
          video.play().catch(function () {});
          if (onSoundBlocked) {
            onSoundBlocked();
          }
        }
      });
    }
  }

  // -- stats ----------------------------------------------------------------------------

  function rate(summary) {
    if (!summary || summary.state !== "connected") {
      return null;
    }
    const loss = summary.lossPct || 0;
    const rtt = summary.rttMs || 0;
    if (loss >= 8 || rtt >= 600) {
      return "poor";
    }
    if (loss >= 2 || rtt >= 250) {
      return "fair";
    }
    return "good";
  }

  // Bitrate, loss and round trip from two getStats() reports, for one direction.
  function summarize(report, previous, direction, now) {
    let bytes = 0;
    let videoBytes = 0;
    let packets = 0;
    let lost = 0;
    let remoteLoss = null;
    let remoteRtt = null;
    let pairRtt = null;
    let selectedPair = null;
    let frameWidth = 0;
    report.forEach(function (s) {
      if (s.type === "transport" && s.selectedCandidatePairId) {
        selectedPair = s.selectedCandidatePairId;
      }
    });
    report.forEach(function (s) {
      if (direction === "receive" && s.type === "inbound-rtp") {
        bytes += s.bytesReceived || 0;
        packets += s.packetsReceived || 0;
        lost += Math.max(0, s.packetsLost || 0);
        if (s.kind === "video") {
          videoBytes += s.bytesReceived || 0;
          frameWidth = s.frameWidth || frameWidth;
        }
      } else if (direction === "send" && s.type === "outbound-rtp") {
        bytes += s.bytesSent || 0;
        packets += s.packetsSent || 0;
        if (s.kind === "video") {
          videoBytes += s.bytesSent || 0;
          frameWidth = s.frameWidth || frameWidth;
        }
      } else if (direction === "send" && s.type === "remote-inbound-rtp") {
        if (typeof s.fractionLost === "number") {
          remoteLoss = Math.max(remoteLoss || 0, s.fractionLost * 100);
        }
        if (typeof s.roundTripTime === "number") {
          remoteRtt = Math.max(remoteRtt || 0, s.roundTripTime * 1000);
        }
      } else if (s.type === "candidate-pair" && typeof s.currentRoundTripTime === "number") {
        if (selectedPair ? s.id === selectedPair : s.nominated && s.state === "succeeded") {
          pairRtt = s.currentRoundTripTime * 1000;
        }
      }
    });
    const out = {
      at: now,
      bytes: bytes,
      videoBytes: videoBytes,
      packets: packets,
      lost: lost,
      frameWidth: frameWidth,
      kbps: 0,
      lossPct: 0,
      rttMs: pairRtt !== null ? pairRtt : remoteRtt,
    };
    if (previous && now > previous.at) {
      const seconds = (now - previous.at) / 1000;
      out.kbps = Math.max(0, ((bytes - previous.bytes) * 8) / 1000 / seconds);
      const dPackets = packets - previous.packets;
      const dLost = lost - previous.lost;
      if (direction === "receive" && dPackets + dLost > 0) {
        out.lossPct = Math.max(0, (100 * dLost) / (dPackets + dLost));
      }
    }
    if (direction === "send" && remoteLoss !== null) {
      out.lossPct = remoteLoss;
    }
    return out;
  }

  // -- WHIP / WHEP link -------------------------------------------------------------------

  // One WHIP or WHEP session that keeps itself up until stop().
  //
  // opts: mode ("whip" | "whep"), url, token, iceServers,
  //   tracks() -> {video, audio}   (whip: the tracks to send now; null = none yet)
  //   maxVideoKbps                  (whip: cap for the video encoder)
  //   onTrack(stream, track)        (whep: the remote stream got a track)
  //   onState(state, detail)        connecting | connected | disconnected | retrying |
  //                                 unavailable (501, 400) | rejected (401/403) |
  //                                 gone (404) | displaced (the server ended it) | closed
  //   onStats(summary)              every second while a peer exists
  //   expectVideo() -> bool         (whep: the other side says its camera is on; a
  //                                 connected link without video bytes is restarted)
  class Link {
    constructor(opts) {
      this.opts = opts;
      this.direction = opts.mode === "whip" ? "send" : "receive";
      this.pc = null;
      this.resource = null;
      this.stopped = true;
      this.state = "closed";
      this.attempt = 0;
      this.retryTimer = null;
      this.graceTimer = null;
      this.statsTimer = null;
      this.lastStats = null;
      this.lastVideoChange = 0;
      this.stream = null;
      this.transceivers = {};
      this.generation = 0;
    }

    start() {
      if (!this.stopped) {
        return;
      }
      this.stopped = false;
      this.attempt = 0;
      this.connect();
    }

    // Retry now instead of waiting out the back-off (e.g. the other side just started).
    kick() {
      if (!this.stopped && this.retryTimer !== null) {
        window.clearTimeout(this.retryTimer);
        this.retryTimer = null;
        this.connect();
      }
    }

    setState(state, detail) {
      this.state = state;
      if (this.opts.onState) {
        this.opts.onState(state, detail);
      }
    }

    async connect() {
      const generation = ++this.generation;
      this.teardown();
      this.setState("connecting");
      let pc;
      try {
        pc = new RTCPeerConnection({
          iceServers: this.opts.iceServers || [],
          bundlePolicy: "max-bundle",
        });
      } catch (err) {
        this.setState("unavailable", String(err));
        return;
      }
      this.pc = pc;
      const self = this;
      if (this.opts.mode === "whip") {
        const tracks = this.opts.tracks ? this.opts.tracks() : {};
        const stream = new MediaStream();
        ["video", "audio"].forEach(function (kind) {
          const track = tracks[kind] || null;
          const init = { direction: "sendonly", streams: [stream] };
          if (kind === "video" && self.opts.maxVideoKbps) {
            init.sendEncodings = [{ maxBitrate: self.opts.maxVideoKbps * 1000 }];
          }
          self.transceivers[kind] = pc.addTransceiver(track || kind, init);
        });
      } else {
        this.stream = new MediaStream();
        pc.addTransceiver("video", { direction: "recvonly" });
        pc.addTransceiver("audio", { direction: "recvonly" });
        pc.addEventListener("track", function (e) {
          if (generation !== self.generation) {
            return;
          }
          self.stream.addTrack(e.track);
          if (self.opts.onTrack) {
            self.opts.onTrack(self.stream, e.track);
          }
        });
      }
      pc.addEventListener("connectionstatechange", function () {
        if (generation === self.generation) {
          self.onConnectionState(pc.connectionState);
        }
      });
      try {
        await pc.setLocalDescription(await pc.createOffer());
        await gatheringComplete(pc, GATHER_TIMEOUT_MS);
        if (generation !== this.generation) {
          return;
        }
        const resp = await fetch(ownUrl(this.opts.url), {
          method: "POST",
          headers: {
            "Content-Type": "application/sdp",
            Authorization: "Bearer " + this.opts.token,
          },
          body: pc.localDescription.sdp,
          cache: "no-store",
          credentials: "omit",
        });
        if (resp.status !== 201) {
          throw new LinkError(resp.status, await problemDetail(resp));
        }
        const location = resp.headers.get("Location");
        const resource = location ? ownUrl(location, ownUrl(this.opts.url)) : null;
        const answer = await resp.text();
        if (generation !== this.generation) {
          this.release(resource, false); // stopped or replaced meanwhile
          return;
        }
        this.resource = resource;
        await pc.setRemoteDescription({ type: "answer", sdp: answer });
        this.watchTransport(pc, generation);
        this.startStats(generation);
      } catch (err) {
        if (generation !== this.generation || this.stopped) {
          return;
        }
        this.teardown();
        const status = err instanceof LinkError ? err.status : 0;
        if (status === 501 || status === 400 || status === 413 || status === 415) {
          // not implemented, or an offer this server cannot take: retrying will not help
          this.stopped = true;
          this.setState("unavailable", err.detail);
        } else if (status === 401 || status === 403) {
          this.stopped = true;
          this.setState("rejected", err.detail);
        } else if (status === 404) {
          // Either the consultation is gone or the other side has nothing yet: the
          // page decides (it probes its own URL); meanwhile keep trying slowly.
          this.setState("gone", err.detail);
          this.retry(true);
        } else {
          this.retry(false);
        }
      }
    }

    onConnectionState(state) {
      window.clearTimeout(this.graceTimer);
      this.graceTimer = null;
      if (state === "connected") {
        this.attempt = 0;
        this.lastVideoChange = Date.now();
        this.setState("connected");
      } else if (state === "disconnected") {
        this.setState("disconnected");
        const self = this;
        this.graceTimer = window.setTimeout(function () {
          self.graceTimer = null;
          if (!self.stopped && self.pc && self.pc.connectionState !== "connected") {
            self.teardown();
            self.retry(false);
          }
        }, DISCONNECT_GRACE_MS);
      } else if (state === "closed") {
        this.displaced(); // not our close() (that fires no event): the server's
      } else if (state === "failed") {
        this.teardown();
        this.retry(false);
      }
    }

    // The server ending its side sends a DTLS close_notify (RFC 5246 §7.2.1), and the
    // DTLS transport closes at once; a network drop shows as an ICE failure instead.
    // The server ends a live session on purpose: it was replaced by a newer one of the
    // same participant (another window or device), the consultation ended, or the
    // server stops. Re-connecting would take the media back from the other device,
    // which would re-connect in turn, so this link stands down ("displaced") and the
    // page offers a button.
    watchTransport(pc, generation) {
      const transceiver = pc.getTransceivers()[0];
      const transport = transceiver && transceiver.sender && transceiver.sender.transport;
      if (!transport || typeof transport.addEventListener !== "function") {
        return;
      }
      const self = this;
      transport.addEventListener("statechange", function () {
        if (generation !== self.generation || self.stopped) {
          return;
        }
        if (transport.state === "closed") {
          self.displaced();
        } else if (transport.state === "failed") {
          self.teardown();
          self.retry(false);
        }
      });
    }

    displaced() {
      this.stopped = true;
      this.generation += 1;
      window.clearTimeout(this.retryTimer);
      this.retryTimer = null;
      this.teardown(false, true); // the server's resource is gone already
      this.setState("displaced");
    }

    retry(slow) {
      if (this.stopped) {
        return;
      }
      const index = Math.min(this.attempt, BACKOFF_MS.length - 1);
      const delay = (slow ? 2 : 1) * BACKOFF_MS[index] * (0.8 + 0.4 * Math.random());
      this.attempt += 1;
      if (this.state !== "gone") {
        this.setState("retrying");
      }
      const self = this;
      window.clearTimeout(this.retryTimer);
      this.retryTimer = window.setTimeout(function () {
        self.retryTimer = null;
        if (!self.stopped) {
          self.connect();
        }
      }, delay);
    }

    // Replace what one transceiver sends (null: send nothing) without renegotiating.
    async setTrack(kind, track) {
      const transceiver = this.transceivers[kind];
      if (transceiver && this.pc && this.pc.signalingState !== "closed") {
        await transceiver.sender.replaceTrack(track || null);
      }
    }

    startStats(generation) {
      const self = this;
      window.clearInterval(this.statsTimer);
      this.lastStats = null;
      this.statsTimer = window.setInterval(async function () {
        const pc = self.pc;
        if (!pc || generation !== self.generation) {
          return;
        }
        let report;
        try {
          report = await pc.getStats();
        } catch (err) {
          return;
        }
        if (generation !== self.generation) {
          return;
        }
        const now = Date.now();
        const summary = summarize(report, self.lastStats, self.direction, now);
        summary.state = pc.connectionState;
        if (!self.lastStats || summary.videoBytes !== self.lastStats.videoBytes) {
          self.lastVideoChange = now;
        }
        summary.videoFlowing =
          summary.videoBytes > 0 && now - self.lastVideoChange < 1500 && summary.frameWidth > 0;
        summary.quality = rate(summary);
        self.lastStats = summary;
        if (self.opts.onStats) {
          self.opts.onStats(summary);
        }
        // A receiver that should get video but has not for a while re-subscribes: the
        // cheapest cure for a publisher that re-connected or a lost keyframe.
        if (
          self.direction === "receive" &&
          pc.connectionState === "connected" &&
          self.opts.expectVideo &&
          self.opts.expectVideo() &&
          now - self.lastVideoChange > STALL_MS
        ) {
          self.lastVideoChange = now;
          self.teardown();
          self.retry(false);
        }
      }, STATS_INTERVAL_MS);
    }

    release(resource, keepalive) {
      if (!resource) {
        return Promise.resolve();
      }
      return fetch(resource, {
        method: "DELETE",
        headers: { Authorization: "Bearer " + this.opts.token },
        keepalive: !!keepalive,
        cache: "no-store",
        credentials: "omit",
      }).catch(function () {});
    }

    // Close the peer and end the server's resource (DELETE Location): also when a new
    // attempt replaces it, so the server never keeps a half-dead session.
    teardown(keepalive, serverGone) {
      window.clearInterval(this.statsTimer);
      this.statsTimer = null;
      window.clearTimeout(this.graceTimer);
      this.graceTimer = null;
      const released = serverGone ? Promise.resolve() : this.release(this.resource, keepalive);
      this.resource = null;
      if (this.pc) {
        this.pc.close();
        this.pc = null;
      }
      this.transceivers = {};
      return released;
    }

    // Stop for good (leave, chat-only, stop sending). keepalive: the DELETE survives a
    // page unload. serverGone: the consultation has ended, the server closed its side
    // already (and no longer knows the token), so only the local peer is closed.
    stop(keepalive, serverGone) {
      this.stopped = true;
      this.generation += 1;
      window.clearTimeout(this.retryTimer);
      this.retryTimer = null;
      const released = this.teardown(keepalive, serverGone);
      this.setState("closed");
      return released;
    }
  }

  // One active page per consultation and role in this browser: the server keeps one
  // WHIP and one WHEP session per participant and replaces the older one, so two tabs
  // would keep taking the media from each other. The newest tab wins; the older ones
  // are told (BroadcastChannel, same origin only) and stand down.
  function claimTab(key, onDisplaced) {
    if (typeof window.BroadcastChannel !== "function") {
      return;
    }
    const channel = new BroadcastChannel("vb-" + key);
    const me = Math.random().toString(36).slice(2);
    channel.addEventListener("message", function (e) {
      if (e.data && e.data.type === "active" && e.data.tab !== me) {
        channel.close();
        onDisplaced();
      }
    });
    channel.postMessage({ type: "active", tab: me });
  }

  VB.rtc = {
    claimTab: claimTab,
    supported: supported,
    canCapture: canCapture,
    capture: capture,
    attach: attach,
    rate: rate,
    summarize: summarize,
    Link: Link,
    LinkError: LinkError,
  };
})();
