// The telephone leg on the advisor's consultation page (docs/phone.md): while a phone
// carries the customer's audio the card says "Telefon verbunden" with the masked number
// and the call's duration, and "Auflegen" ends the call (POST .../phone/hangup). The
// "phone" events come over the events socket, passed on by advisor-room.js.
"use strict";

(function () {
  const VB = window.VB;
  const room = document.getElementById("room");
  const card = document.getElementById("phone-call");
  if (!room || !card) {
    return;
  }
  const numberEl = document.getElementById("phone-call-number");
  const durationEl = document.getElementById("phone-call-duration");
  const button = document.getElementById("phone-hangup");
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : "";
  const url = "/api/sessions/" + encodeURIComponent(room.dataset.id) + "/phone/hangup";
  let since = null; // the call's start, in the page's clock
  let timer = null;

  function tick() {
    const seconds = Math.max(0, Math.floor((Date.now() - since) / 1000));
    const s = seconds % 60;
    durationEl.textContent = Math.floor(seconds / 60) + ":" + (s < 10 ? "0" : "") + s;
  }

  function show(ev) {
    if (ev.active) {
      numberEl.textContent = ev.number || "";
      // the gateway's start time, but never ahead of this clock (skew between machines)
      since = Math.min(Date.now(), (ev.since || Date.now() / 1000) * 1000);
      tick();
      if (!timer) {
        timer = window.setInterval(tick, 1000);
      }
      button.disabled = false;
    } else if (timer) {
      window.clearInterval(timer);
      timer = null;
    }
    card.hidden = !ev.active;
  }

  button.addEventListener("click", function () {
    button.disabled = true;
    fetch(url, {
      method: "POST",
      credentials: "same-origin",
      cache: "no-store",
      headers: { "X-CSRF-Token": csrf },
    }).catch(function () {
      button.disabled = false;
    });
  });

  // -- dial-out: the advisor types the customer's number (never kept: the field is
  // emptied as soon as the request is sent) --------------------------------------------
  const dialForm = document.getElementById("phone-dial");
  const dialStatus = document.getElementById("phone-dial-status");
  const dialInput = document.getElementById("phone-dial-number");

  function dialText(key) {
    if (dialStatus) {
      VB.i18n.setText(dialStatus, key);
    }
  }

  if (dialForm) {
    dialForm.addEventListener("submit", function (event) {
      event.preventDefault();
      const number = dialInput.value;
      dialInput.value = "";
      dialText("phone.dial.calling");
      fetch(url.replace(/hangup$/, "call"), {
        method: "POST",
        credentials: "same-origin",
        cache: "no-store",
        headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json" },
        body: JSON.stringify({ number: number }),
      })
        .then(function (resp) {
          if (resp.status === 400) {
            dialText("phone.dial.invalid");
          } else if (!resp.ok) {
            dialText("phone.dial.failed");
          }
        })
        .catch(function () {
          dialText("phone.dial.failed");
        });
    });
  }

  function onEvent(ev) {
    show(ev);
    if (ev.active) {
      if (dialStatus) {
        delete dialStatus.dataset.t; // nothing to say while the call is on
        dialStatus.textContent = "";
      }
    } else if (ev.outcome === "no-answer" || ev.outcome === "rejected") {
      dialText("phone.dial.failed");
    }
  }

  VB.phone = { onEvent: onEvent };
})();
