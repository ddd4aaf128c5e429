// Advisor overview: create a consultation. Cookie-authenticated requests carry the CSRF
// token from <meta name="csrf-token"> in the X-CSRF-Token header.
"use strict";

(function () {
  const VB = window.VB;
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : "";
  const create = document.getElementById("create-session");
  if (!create) {
    return;
  }

  function field(dl, key, value, href) {
    const dt = document.createElement("dt");
    VB.i18n.setText(dt, key);
    const dd = document.createElement("dd");
    if (href) {
      const a = document.createElement("a");
      a.href = href;
      a.className = "link";
      a.textContent = value;
      dd.appendChild(a);
    } else {
      dd.textContent = value;
      dd.className = "pin";
    }
    dl.appendChild(dt);
    dl.appendChild(dd);
  }

  create.addEventListener("click", async function () {
    const out = document.getElementById("created");
    out.textContent = "";
    out.hidden = false;
    create.disabled = true;
    try {
      const resp = await fetch("/api/sessions", {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf },
      });
      const body = await resp.json();
      if (resp.status !== 201) {
        VB.i18n.setText(out, "overview.error", { detail: body.detail || resp.status });
        return;
      }
      const dl = document.createElement("dl");
      field(dl, "overview.created.link", body.customer.page_url, body.customer.page_url);
      field(dl, "overview.created.pin", body.customer.pin);
      field(dl, "overview.created.flash", body.customer.flash_page_url, body.customer.flash_page_url);
      const room = "/advisor/" + encodeURIComponent(body.id);
      field(dl, "overview.created.open", body.advisor.page_url, room);
      out.appendChild(dl);
    } catch (err) {
      VB.i18n.setText(out, "overview.create_failed");
    } finally {
      create.disabled = false;
    }
  });
})();
