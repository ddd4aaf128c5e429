// Notification sounds, made here with WebAudio oscillators: nothing is fetched, no file,
// no third party. A short chime per occasion ("message", "join": the customer came,
// "arrive": the advisor is here, "lobby": someone waits to be let in, "tone": the device
// check's test sound). Muting is remembered on this device (localStorage "vb-sounds";
// nothing of the conversation is stored). Browsers start an AudioContext suspended until
// the page gets a gesture; the first tap or key resumes it.
"use strict";

(function () {
  const VB = (window.VB = window.VB || {});
  const KEY = "vb-sounds";
  // [frequency Hz, seconds] per note
  const TUNES = {
    message: [[880, 0.09], [1175, 0.12]],
    join: [[660, 0.12], [880, 0.18]],
    arrive: [[523, 0.12], [784, 0.2]],
    lobby: [[784, 0.14], [988, 0.14], [1319, 0.22]],
    tone: [[440, 0.6]],
  };
  let ctx = null;

  function muted() {
    try {
      return window.localStorage.getItem(KEY) === "off";
    } catch (err) {
      return false;
    }
  }

  function context() {
    const AC = window.AudioContext || window.webkitAudioContext;
    if (!AC) {
      return null;
    }
    if (!ctx) {
      ctx = new AC();
    }
    if (ctx.state === "suspended") {
      ctx.resume().catch(function () {});
    }
    return ctx;
  }

  // Plays `name` into `destination` (default: the speakers) unless muted; `always`:
  // the device check's test sound, which the customer asked for.
  function play(name, destination, always) {
    if (!always && muted()) {
      return false;
    }
    const c = context();
    if (!c) {
      return false;
    }
    let at = c.currentTime + 0.02;
    (TUNES[name] || TUNES.message).forEach(function (note) {
      const osc = c.createOscillator();
      const gain = c.createGain();
      osc.type = "sine";
      osc.frequency.value = note[0];
      // a soft attack and decay: no click
      gain.gain.setValueAtTime(0.0001, at);
      gain.gain.exponentialRampToValueAtTime(0.25, at + 0.015);
      gain.gain.exponentialRampToValueAtTime(0.0001, at + note[1]);
      osc.connect(gain);
      gain.connect(destination || c.destination);
      osc.start(at);
      osc.stop(at + note[1] + 0.02);
      at += note[1];
    });
    return true;
  }

  function renderToggle() {
    const button = document.getElementById("sound-toggle");
    if (!button) {
      return;
    }
    const on = !muted();
    button.dataset.on = String(on);
    VB.i18n.setText(button.querySelector(".toggle-label"), on ? "sound.mute" : "sound.unmute");
  }

  function setMuted(off) {
    try {
      if (off) {
        window.localStorage.setItem(KEY, "off");
      } else {
        window.localStorage.removeItem(KEY);
      }
    } catch (err) {
      // storage off: the choice lasts as long as the page
    }
    renderToggle();
  }

  function unlock() {
    if (ctx && ctx.state === "suspended") {
      ctx.resume().catch(function () {});
    }
  }
  document.addEventListener("pointerdown", unlock, true);
  document.addEventListener("keydown", unlock, true);

  const toggle = document.getElementById("sound-toggle");
  if (toggle) {
    toggle.addEventListener("click", function () {
      setMuted(!muted());
    });
    renderToggle();
  }

  VB.sounds = { play: play, muted: muted, setMuted: setMuted, context: context };
})();
