// Advisor start page: create a consultation (with an optional label and appointment),
// copy link and PIN, see who is waiting and which link is locked (a new PIN in one
// click), join, end. Cookie-authenticated requests carry the CSRF token from <meta name="csrf-token">
// in the X-CSRF-Token header (the "end" forms carry it as a hidden field).
"use strict";

(function () {
  const VB = window.VB;
  const i18n = VB.i18n;
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : "";
  const create = document.getElementById("create-session");
  if (!create) {
    return;
  }
  const POLL_MS = 3000;
  const baseTitle = document.title;

  // -- create ---------------------------------------------------------------------------------

  // Label and appointment are optional (kept in memory only, shown to this advisor). The
  // appointment field is local time; the API takes RFC 3339 with an offset (UTC here).
  function options() {
    const body = {};
    const label = document.getElementById("create-label");
    const when = document.getElementById("create-appointment");
    if (label && label.value.trim()) {
      body.label = label.value.trim();
    }
    // the waiting room: the customer is let in with "Einlassen" (docs/web.md)
    const waitingRoom = document.getElementById("create-waiting-room");
    if (waitingRoom) {
      body.waiting_room = waitingRoom.checked;
    }
    if (when && when.value) {
      const date = new Date(when.value);
      if (!isNaN(date.getTime())) {
        body.appointment = date.toISOString();
      }
    }
    return body;
  }

  async function createConsultation() {
    const out = document.getElementById("created");
    out.textContent = "";
    create.disabled = true;
    try {
      const resp = await fetch("/api/sessions", {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json" },
        body: JSON.stringify(options()),
      });
      const body = await resp.json();
      if (resp.status !== 201) {
        out.hidden = false;
        i18n.setText(out, "overview.error", { detail: body.detail || resp.status });
        return;
      }
      // the table shows it, with link, PIN and copy buttons, marked as new
      window.location.assign("/advisor?created=" + encodeURIComponent(body.id));
    } catch (err) {
      out.hidden = false;
      i18n.setText(out, "overview.create_failed");
    } finally {
      create.disabled = false;
    }
  }

  const createForm = document.getElementById("create-form");
  if (createForm) {
    createForm.addEventListener("submit", function (event) {
      event.preventDefault();
      createConsultation();
    });
  } else {
    create.addEventListener("click", createConsultation);
  }

  // -- times in the advisor's own time zone ----------------------------------------------------

  function localTimes() {
    const locale = i18n.lang() === "de" ? "de-DE" : "en-GB";
    document.querySelectorAll("time[datetime]").forEach(function (el) {
      const date = new Date(el.getAttribute("datetime"));
      if (!isNaN(date.getTime())) {
        el.textContent = date.toLocaleString(locale, {
          day: "2-digit",
          month: "2-digit",
          hour: "2-digit",
          minute: "2-digit",
        });
      }
    });
  }
  localTimes();
  i18n.onChange(localTimes);

  // -- a locked link: a new PIN and link in one click -------------------------------------------

  function showAccess(id, access) {
    const row = document.getElementById("c-" + id);
    if (!row) {
      return;
    }
    const link = document.getElementById("link-" + id);
    const pin = document.getElementById("pin-" + id);
    if (link && link.textContent !== access.page_url) {
      link.textContent = access.page_url;
      link.href = access.page_url;
    }
    if (pin && pin.textContent !== access.pin) {
      pin.textContent = access.pin;
    }
  }

  document.addEventListener("click", async function (event) {
    const button = event.target.closest && event.target.closest("button.new-pin");
    if (!button) {
      return;
    }
    button.disabled = true;
    try {
      const resp = await fetch("/api/sessions/" + encodeURIComponent(button.dataset.id) + "/access", {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf },
      });
      if (resp.ok) {
        const access = await resp.json();
        showAccess(button.dataset.id, { pin: access.pin_display, page_url: access.page_url });
        setState(button.dataset.id, access.locked ? "locked" : "absent");
      }
    } catch (err) {
      // the next poll shows the state as it is
    } finally {
      button.disabled = false;
    }
  });

  // -- copy link and PIN ----------------------------------------------------------------------

  // -- end: ask first -------------------------------------------------------------------------

  document.querySelectorAll("form.end-form").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(i18n.t(form.dataset.confirm))) {
        event.preventDefault();
      }
    });
  });

  // -- who is waiting -------------------------------------------------------------------------

  const STATE_KEYS = {
    absent: "overview.absent",
    waiting: "overview.waiting",
    together: "overview.together",
    locked: "overview.locked",
    noshow: "overview.noshow",
    lobby: "overview.lobby",
  };

  function setState(id, state) {
    const row = document.getElementById("c-" + id);
    if (!row) {
      return;
    }
    if (row.dataset.state !== state) {
      row.dataset.state = state;
      i18n.setText(row.querySelector(".customer-state"), STATE_KEYS[state]);
    }
    const button = row.querySelector("button.new-pin");
    if (button) {
      button.hidden = state !== "locked";
    }
    const admit = row.querySelector("button.lobby-admit");
    if (admit) {
      admit.hidden = state !== "lobby";
    }
  }

  // What a customer in the waiting room wrote meanwhile (the text as text, never HTML).
  function showMessage(id, message) {
    const el = document.getElementById("msg-" + id);
    if (!el) {
      return;
    }
    el.hidden = !message;
    el.textContent = message ? message.text : "";
  }

  // -- the waiting room: alert and "Einlassen" --------------------------------------------------

  function alertLobby() {
    if (VB.sounds) {
      VB.sounds.play("lobby");
    }
    if (
      typeof window.Notification === "function" &&
      window.Notification.permission === "granted" &&
      document.hidden
    ) {
      try {
        new window.Notification(i18n.t("app.name"), { body: i18n.t("lobby.notification") });
      } catch (err) {
        // notifications from a service worker only: the title and the chime remain
      }
    }
  }

  document.addEventListener("click", async function (event) {
    const button = event.target.closest && event.target.closest("button.lobby-admit");
    if (!button) {
      return;
    }
    button.disabled = true;
    try {
      await fetch("/api/sessions/" + encodeURIComponent(button.dataset.id) + "/admission", {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf },
      });
    } catch (err) {
      // the next poll shows the state as it is
    } finally {
      button.disabled = false;
    }
  });

  function render(consultations) {
    const rows = document.querySelectorAll("#consultations tbody tr[data-id]");
    const shown = Array.prototype.map.call(rows, function (row) {
      return row.dataset.id;
    });
    const known = consultations.map(function (c) {
      return c.id;
    });
    if (shown.length !== known.length || known.some((id) => shown.indexOf(id) < 0)) {
      // created elsewhere or ended: the server renders the table again
      window.location.reload();
      return;
    }
    let waiting = 0;
    let lobby = 0;
    let newcomer = false;
    consultations.forEach(function (c) {
      const row = document.getElementById("c-" + c.id);
      if (c.customer === "waiting") {
        waiting += 1;
      } else if (c.customer === "lobby") {
        lobby += 1;
      }
      if (row) {
        newcomer = newcomer || (c.customer === "lobby" && row.dataset.state !== "lobby");
        setState(c.id, c.customer);
        showAccess(c.id, c);
        showMessage(c.id, c.message);
      }
    });
    if (lobby) {
      document.title = i18n.t("overview.lobby_title", { n: lobby });
    } else {
      document.title = waiting ? i18n.t("overview.waiting_title", { n: waiting }) : baseTitle;
    }
    if (newcomer) {
      alertLobby();
    }
  }

  async function poll() {
    try {
      const resp = await fetch("/advisor/state", { credentials: "same-origin" });
      if (resp.status === 403) {
        window.location.reload(); // signed out (elsewhere, or the password changed)
        return;
      }
      if (resp.ok) {
        render((await resp.json()).consultations);
      }
    } catch (err) {
      // the gateway restarts or the network dropped: try again at the next tick
    }
    window.setTimeout(poll, POLL_MS);
  }

  window.setTimeout(poll, POLL_MS);
})();
