// Advisor pages: create a consultation and end one. Cookie-authenticated requests carry
// the CSRF token from <meta name="csrf-token"> in the X-CSRF-Token header.
"use strict";

(function () {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : "";

  function field(dl, label, value, href) {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    if (href) {
      const a = document.createElement("a");
      a.href = href;
      a.textContent = value;
      dd.appendChild(a);
    } else {
      dd.textContent = value;
    }
    dl.appendChild(dt);
    dl.appendChild(dd);
  }

  const create = document.getElementById("create-session");
  if (create) {
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
          out.textContent = "Fehler: " + (body.detail || resp.status);
          return;
        }
        const dl = document.createElement("dl");
        field(dl, "Link für den Kunden", body.customer.page_url, body.customer.page_url);
        field(dl, "PIN", body.customer.pin);
        field(dl, "Flash-Zugang", body.customer.flash_page_url, body.customer.flash_page_url);
        field(dl, "Beratung öffnen", body.advisor.page_url, body.advisor.page_url);
        out.appendChild(dl);
      } catch (err) {
        out.textContent = "Die Beratung konnte nicht angelegt werden.";
      } finally {
        create.disabled = false;
      }
    });
  }

  const end = document.getElementById("end-session");
  if (end) {
    end.addEventListener("click", async function () {
      if (!window.confirm("Beratung jetzt für alle beenden?")) {
        return;
      }
      const resp = await fetch("/api/sessions/" + encodeURIComponent(end.dataset.id), {
        method: "DELETE",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf },
      });
      if (resp.status === 204 || resp.status === 404) {
        window.location.href = "/advisor";
      }
    });
  }
})();
