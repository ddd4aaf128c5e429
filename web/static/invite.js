// "Einladung per E-Mail" on the advisor's overview (docs/web.md "Invitations by e-mail"):
// the advisor types the customer's address, the gateway sends the link (never the PIN)
// through the bank's mail relay. The address goes to the server in this one request and
// is kept nowhere; after a failure it stays in the field for another try.
"use strict";

(function () {
  const VB = window.VB;
  const i18n = VB.i18n;
  const dialog = document.getElementById("invite-dialog");
  if (!dialog) {
    return;
  }
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : "";
  const form = document.getElementById("invite-form");
  const input = document.getElementById("invite-email");
  const status = document.getElementById("invite-status");
  const send = document.getElementById("invite-send");
  let consultation = null;
  let opener = null;

  function say(key, params, error) {
    status.hidden = false;
    status.className = error ? "error" : key === "invite.sent" ? "notice sent" : "notice";
    i18n.setText(status, key, params);
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest && event.target.closest(".invite");
    if (!button) {
      return;
    }
    consultation = button.dataset.id;
    opener = button;
    input.value = "";
    input.removeAttribute("aria-invalid");
    status.hidden = true;
    send.disabled = false;
    dialog.showModal();
    input.focus();
  });

  document.getElementById("invite-cancel").addEventListener("click", function () {
    dialog.close();
  });
  dialog.addEventListener("close", function () {
    input.value = ""; // the address is not kept, not even in the page
    if (opener) {
      opener.focus();
    }
  });

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const address = input.value.trim();
    if (!input.checkValidity() || address.indexOf("@") < 1) {
      input.setAttribute("aria-invalid", "true");
      say("invite.invalid", null, true);
      input.focus();
      return;
    }
    input.removeAttribute("aria-invalid");
    send.disabled = true;
    say("invite.sending");
    try {
      const resp = await fetch("/api/sessions/" + encodeURIComponent(consultation) + "/invitation", {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json" },
        body: JSON.stringify({ email: address, lang: i18n.lang() }),
      });
      if (resp.ok) {
        say("invite.sent", { email: address });
        input.value = "";
      } else if (resp.status === 400) {
        input.setAttribute("aria-invalid", "true");
        say("invite.invalid", null, true);
      } else if (resp.status === 503) {
        say("invite.unavailable", null, true);
      } else {
        say("invite.failed", null, true);
      }
    } catch (err) {
      say("invite.failed", null, true);
    } finally {
      send.disabled = false;
    }
  });
})();
