// The chosen camera, microphone and speaker, remembered on this device (localStorage
// "vb-devices": device ids only, nothing of the conversation), and the device check
// between the PIN and the room: the camera's picture, the microphone's level, a test
// sound through the chosen speaker. The check sends nothing anywhere and stops every
// track it opened when it closes: in the room, camera and microphone start off.
"use strict";

(function () {
  const VB = (window.VB = window.VB || {});
  const i18n = VB.i18n;
  const KEY = "vb-devices";
  const KINDS = { camera: "videoinput", microphone: "audioinput", speaker: "audiooutput" };
  // HTMLMediaElement.setSinkId: Chromium and Firefox; not Safari (then the system's)
  const canChooseSpeaker =
    typeof HTMLMediaElement !== "undefined" && "setSinkId" in HTMLMediaElement.prototype;

  function saved() {
    try {
      const value = JSON.parse(window.localStorage.getItem(KEY) || "{}");
      return value && typeof value === "object" ? value : {};
    } catch (err) {
      return {};
    }
  }

  function save(choice) {
    const all = saved();
    Object.keys(choice).forEach(function (name) {
      if (KINDS[name] && typeof choice[name] === "string" && choice[name]) {
        all[name] = choice[name];
      }
    });
    try {
      window.localStorage.setItem(KEY, JSON.stringify(all));
    } catch (err) {
      // storage off: the choice lasts as long as the page
    }
  }

  // The deviceId constraint for capturing `kind` ("video"/"audio"): the remembered
  // device, "exact" (Chromium keeps the default device for an "ideal" one); a caller
  // whose device is gone (OverconstrainedError) asks again without (withoutGone).
  function deviceId(kind) {
    const id = saved()[kind === "video" ? "camera" : "microphone"];
    return id ? { exact: id } : undefined;
  }

  // getUserMedia(constraints), and once more without the chosen devices if one of them
  // is not there any more (unplugged, another computer's id).
  async function withoutGone(constraints) {
    try {
      return await navigator.mediaDevices.getUserMedia(constraints);
    } catch (err) {
      const gone = err && (err.name === "OverconstrainedError" || err.name === "NotFoundError");
      const chosen = ["video", "audio"].filter(function (k) {
        return constraints[k] && constraints[k].deviceId;
      });
      if (!gone || chosen.length === 0) {
        throw err;
      }
      const again = {};
      Object.keys(constraints).forEach(function (k) {
        again[k] = Object.assign({}, constraints[k]);
        delete again[k].deviceId;
      });
      return await navigator.mediaDevices.getUserMedia(again);
    }
  }

  // Plays `element` through the chosen speaker, where the browser lets pages choose.
  function applySpeaker(element) {
    const id = saved().speaker;
    if (canChooseSpeaker && id && element.sinkId !== id) {
      element.setSinkId(id).catch(function () {
        // the speaker is gone: the default plays
      });
    }
  }

  function problemKey(err) {
    const name = err && err.name;
    if (name === "NotAllowedError" || name === "SecurityError") {
      return "check.denied";
    }
    if (name === "NotReadableError" || name === "AbortError") {
      return "check.busy";
    }
    if (name === "NotFoundError" || name === "OverconstrainedError") {
      return "check.no_camera";
    }
    return "check.failed";
  }

  // The check. done() runs once, when the customer continues or skips (every track is
  // stopped by then).
  class DeviceCheck {
    constructor(done) {
      this.done = done;
      this.root = document.getElementById("device-check");
      this.video = document.getElementById("check-video");
      this.videoNote = document.getElementById("check-video-note");
      this.meter = document.getElementById("check-level");
      this.error = document.getElementById("check-error");
      this.retry = document.getElementById("check-retry");
      this.selects = {
        camera: document.getElementById("check-camera"),
        microphone: document.getElementById("check-microphone"),
        speaker: document.getElementById("check-speaker"),
      };
      this.stream = null;
      this.audio = null; // { ctx, timer } of the level meter
      this.toneOut = null;
      this.generation = 0;
      this.closed = false;
      const self = this;
      ["camera", "microphone"].forEach(function (name) {
        self.selects[name].addEventListener("change", function () {
          const choice = {};
          choice[name] = self.selects[name].value;
          save(choice);
          self.open();
        });
      });
      this.selects.speaker.addEventListener("change", function () {
        save({ speaker: self.selects.speaker.value });
        self.playTone();
      });
      document.getElementById("check-tone").addEventListener("click", function () {
        self.playTone();
      });
      this.retry.addEventListener("click", function () {
        self.open();
      });
      document.getElementById("check-join").addEventListener("click", function () {
        self.close(true);
      });
      document.getElementById("check-skip").addEventListener("click", function () {
        self.close(false);
      });
    }

    showError(key) {
      this.error.hidden = !key;
      this.retry.hidden = !key || key === "check.no_camera";
      if (key) {
        i18n.setText(this.error, key);
      }
    }

    async capture() {
      const want = {
        video: { deviceId: deviceId("video"), width: { ideal: 640 }, height: { ideal: 480 } },
        audio: { deviceId: deviceId("audio"), echoCancellation: true, noiseSuppression: true },
      };
      try {
        return await withoutGone(want);
      } catch (err) {
        if (err && (err.name === "NotFoundError" || err.name === "OverconstrainedError")) {
          // one of the two is missing: check the other alone
          try {
            return await withoutGone({ audio: want.audio });
          } catch (err2) {
            return await withoutGone({ video: want.video });
          }
        }
        throw err;
      }
    }

    async open() {
      const generation = ++this.generation;
      this.stopTracks();
      this.showError(null);
      this.videoNote.hidden = false;
      i18n.setText(this.videoNote, "check.starting");
      let stream;
      try {
        stream = await this.capture();
      } catch (err) {
        if (generation === this.generation && !this.closed) {
          this.showError(problemKey(err));
          this.videoNote.hidden = true;
          await this.fillSelects();
        }
        return;
      }
      if (generation !== this.generation || this.closed) {
        stream.getTracks().forEach(function (t) {
          t.stop();
        });
        return;
      }
      this.stream = stream;
      const hasVideo = stream.getVideoTracks().length > 0;
      if (hasVideo) {
        this.video.srcObject = stream;
        this.video.play().catch(function () {});
        this.videoNote.hidden = true;
      } else {
        i18n.setText(this.videoNote, "check.no_camera");
      }
      this.startMeter(stream);
      await this.fillSelects();
    }

    // The microphone's level: RMS of the signal (AnalyserNode), ten times a second.
    startMeter(stream) {
      const track = stream.getAudioTracks()[0];
      const AC = window.AudioContext || window.webkitAudioContext;
      if (!track || !AC) {
        return;
      }
      const ctx = new AC();
      const analyser = ctx.createAnalyser();
      analyser.fftSize = 1024;
      ctx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
      const samples = new Float32Array(analyser.fftSize);
      const meter = this.meter;
      const timer = window.setInterval(function () {
        analyser.getFloatTimeDomainData(samples);
        let sum = 0;
        for (let i = 0; i < samples.length; i += 1) {
          sum += samples[i] * samples[i];
        }
        // speech sits around RMS 0.02–0.2: scaled so that talking fills half the bar
        meter.value = Math.min(1, Math.sqrt(sum / samples.length) * 4);
      }, 100);
      if (ctx.state === "suspended") {
        ctx.resume().catch(function () {});
      }
      this.audio = { ctx: ctx, timer: timer };
    }

    async fillSelects() {
      let devices = [];
      try {
        devices = await navigator.mediaDevices.enumerateDevices();
      } catch (err) {
        devices = [];
      }
      const inUse = {};
      if (this.stream) {
        this.stream.getTracks().forEach(function (track) {
          const settings = track.getSettings ? track.getSettings() : {};
          inUse[track.kind === "video" ? "camera" : "microphone"] = settings.deviceId;
        });
      }
      const remembered = saved();
      const self = this;
      Object.keys(KINDS).forEach(function (name) {
        const select = self.selects[name];
        const found = devices.filter(function (d) {
          return d.kind === KINDS[name] && d.deviceId;
        });
        const field = document.getElementById("check-" + name + "-field");
        field.hidden = found.length === 0 || (name === "speaker" && !canChooseSpeaker);
        select.textContent = "";
        found.forEach(function (d, index) {
          const option = document.createElement("option");
          option.value = d.deviceId;
          // labels are empty until the page may use the devices: "Kamera 1"
          option.textContent = d.label || i18n.t("check." + name + "_n", { n: index + 1 });
          select.appendChild(option);
        });
        const current = inUse[name] || remembered[name];
        if (current && found.some((d) => d.deviceId === current)) {
          select.value = current;
        }
      });
    }

    // A short tone through the chosen speaker: WebAudio into an <audio> element, whose
    // output device a page may choose (setSinkId); AudioContext itself may not everywhere.
    playTone() {
      const c = VB.sounds && VB.sounds.context();
      if (!c) {
        return;
      }
      if (!this.toneOut) {
        const dest = c.createMediaStreamDestination();
        const el = new Audio();
        el.srcObject = dest.stream;
        this.toneOut = { dest: dest, el: el };
      }
      const out = this.toneOut;
      if (canChooseSpeaker && this.selects.speaker.value) {
        out.el.setSinkId(this.selects.speaker.value).catch(function () {});
      }
      out.el.play().catch(function () {});
      VB.sounds.play("tone", out.dest, true);
    }

    stopTracks() {
      if (this.stream) {
        this.stream.getTracks().forEach(function (t) {
          t.stop();
        });
        this.stream = null;
      }
      this.video.srcObject = null;
      if (this.audio) {
        window.clearInterval(this.audio.timer);
        this.audio.ctx.close().catch(function () {});
        this.audio = null;
      }
      this.meter.value = 0;
    }

    // continuing keeps the devices in use for the room; skipping keeps what was chosen
    close(keep) {
      if (this.closed) {
        return;
      }
      if (keep) {
        const choice = {};
        const self = this;
        ["camera", "microphone", "speaker"].forEach(function (name) {
          if (!self.selects[name].closest("[hidden]")) {
            choice[name] = self.selects[name].value;
          }
        });
        save(choice);
      }
      this.closed = true;
      this.generation += 1;
      this.stopTracks();
      if (this.toneOut) {
        this.toneOut.el.pause();
        this.toneOut.el.srcObject = null;
        this.toneOut = null;
      }
      this.done(keep);
    }
  }

  // The same check as a dialog (the advisor's room): opened again and again; closing it
  // any way (Escape too) stops its tracks. onClose(applied) after each.
  function chooser(dialog, onClose) {
    let dc = null;
    dialog.addEventListener("close", function () {
      if (dc && !dc.closed) {
        dc.close(false);
      }
    });
    return function open() {
      if (!dc) {
        dc = new DeviceCheck(function (applied) {
          if (dialog.open) {
            dialog.close();
          }
          onClose(applied);
        });
      }
      dc.closed = false;
      dialog.showModal();
      dc.open();
    };
  }

  // Runs the check if the page asks for one (data-check on #room: the customer's first
  // entry into this consultation, web/pages.py) and the browser can capture; else
  // done() now.
  function check(done) {
    const root = document.getElementById("device-check");
    const room = document.getElementById("room");
    const canCapture = !!(
      navigator.mediaDevices && typeof navigator.mediaDevices.getUserMedia === "function"
    );
    if (!root || !room.dataset.check || !canCapture || !(VB.rtc && VB.rtc.supported)) {
      done();
      return null;
    }
    const dc = new DeviceCheck(done);
    dc.open();
    return dc;
  }

  VB.devices = {
    saved: saved,
    deviceId: deviceId,
    withoutGone: withoutGone,
    applySpeaker: applySpeaker,
    canChooseSpeaker: canChooseSpeaker,
    check: check,
    chooser: chooser,
  };
})();
