// Advisor start page: create a consultation, copy link and PIN, see who is waiting, join,
// end. Cookie-authenticated requests carry the CSRF token from <meta name="csrf-token">
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

  create.addEventListener("click", async function () {
    const out = document.getElementById("created");
    out.textContent = "";
    create.disabled = true;
    try {
      const resp = await fetch("/api/sessions", {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf },
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
  };

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
    consultations.forEach(function (c) {
      const row = document.getElementById("c-" + c.id);
      if (c.customer === "waiting") {
        waiting += 1;
      }
      if (row && row.dataset.state !== c.customer) {
        row.dataset.state = c.customer;
        i18n.setText(row.querySelector(".customer-state"), STATE_KEYS[c.customer]);
      }
    });
    document.title = waiting ? i18n.t("overview.waiting_title", { n: waiting }) : baseTitle;
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
