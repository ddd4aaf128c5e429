// The forms card of both consultation pages (docs/forms.md). The advisor picks a template
// and sends it (POST /api/sessions/{id}/forms, cookie + CSRF header); both sides list the
// consultation's forms from the `form` events of the events socket (room.js hands them
// here), the customer with a link to fill each one, both with the filled form's HTML and
// PDF once it is submitted. The form page itself works without any script.
"use strict";

(function () {
  const VB = (window.VB = window.VB || {});
  const i18n = VB.i18n;
  const card = document.getElementById("forms");
  if (!card || !i18n) {
    return;
  }
  const role = card.dataset.role;
  const list = document.getElementById("forms-list");
  const empty = card.querySelector(".forms-empty");
  const alertEl = document.getElementById("forms-alert");
  const forms = new Map(); // id -> latest form event

  function meta(name) {
    const m = document.querySelector('meta[name="' + name + '"]');
    return m ? m.content : "";
  }

  function title(form) {
    return i18n.lang() === "en" && form.title_en ? form.title_en : form.title;
  }

  function link(href, key, extra) {
    const a = document.createElement("a");
    a.href = href;
    a.className = "button secondary";
    i18n.setText(a, key);
    Object.keys(extra || {}).forEach(function (name) {
      a.setAttribute(name, extra[name]);
    });
    return a;
  }

  function documentHref(form, doc) {
    if (role === "advisor") {
      return card.dataset.documents + encodeURIComponent(doc.id);
    }
    return (
      card.dataset.base +
      encodeURIComponent(form.id) +
      "/documents/" +
      encodeURIComponent(doc.id)
    );
  }

  function item(form) {
    const li = document.createElement("li");
    li.dataset.state = form.state;
    const name = document.createElement("strong");
    name.textContent = title(form);
    const state = document.createElement("span");
    state.className = "form-state";
    const submitted = form.state === "submitted";
    if (role === "advisor") {
      i18n.setText(state, submitted ? "forms.state.submitted" : "forms.state.sent");
    } else {
      i18n.setText(state, submitted ? "forms.customer.submitted" : "forms.customer.sent");
    }
    li.append(name, " – ", state);
    const actions = document.createElement("span");
    actions.className = "form-actions";
    if (role === "advisor") {
      actions.append(
        link(card.dataset.view + encodeURIComponent(form.id), "forms.view", {
          target: "_blank",
          rel: "noopener",
        })
      );
    } else if (!submitted) {
      // The page's own URL, not the event's one-time link: the room's cookie opens it.
      actions.append(
        link(card.dataset.base + encodeURIComponent(form.id), "forms.customer.fill", {
          target: "_blank",
          rel: "noopener",
          class: "button primary",
        })
      );
    }
    (form.documents || []).forEach(function (doc) {
      const pdf = doc.content_type === "application/pdf";
      actions.append(
        link(documentHref(form, doc), pdf ? "forms.pdf" : "forms.html", { download: doc.name })
      );
    });
    li.append(actions);
    return li;
  }

  function render() {
    list.textContent = "";
    forms.forEach(function (form) {
      list.append(item(form));
    });
    if (empty) {
      empty.hidden = forms.size > 0;
    }
    if (role === "customer") {
      card.hidden = forms.size === 0;
      let waiting = false;
      forms.forEach(function (form) {
        waiting = waiting || form.state !== "submitted";
      });
      if (alertEl) {
        alertEl.hidden = !waiting;
      }
    }
  }

  // On a phone the card sits below the picture: bring a newly arrived form into view
  // (once per form and page, not again when the events socket replays it).
  const announced = new Set();

  function onEvent(ev) {
    if (ev.type !== "form" || typeof ev.id !== "string") {
      return;
    }
    forms.set(ev.id, ev);
    render();
    if (role === "customer" && ev.state === "sent" && !announced.has(ev.id)) {
      announced.add(ev.id);
      card.scrollIntoView({ behavior: "smooth", block: "nearest" });
    }
  }

  i18n.onChange(render);
  VB.forms = { onEvent: onEvent };

  if (role !== "advisor") {
    return;
  }

  // -- the advisor sends one ---------------------------------------------------------------
  const sendForm = document.getElementById("forms-send");
  const select = document.getElementById("form-template");
  const note = document.getElementById("forms-note");
  const button = sendForm.querySelector("button");
  let templates = [];

  function fillTemplates() {
    const chosen = select.value;
    select.textContent = "";
    templates.forEach(function (t) {
      const option = document.createElement("option");
      option.value = t.id;
      option.textContent = i18n.lang() === "en" ? t.title_en : t.title;
      select.append(option);
    });
    if (chosen) {
      select.value = chosen;
    }
    button.disabled = templates.length === 0;
  }
  i18n.onChange(fillTemplates);

  async function loadTemplates() {
    try {
      const resp = await fetch(card.dataset.templates, { credentials: "same-origin" });
      if (resp.ok) {
        templates = await resp.json();
      }
    } catch (err) {
      templates = [];
    }
    fillTemplates();
  }

  function showNote(key, params) {
    if (!key) {
      note.hidden = true;
      return;
    }
    i18n.setText(note, key, params);
    note.hidden = false;
  }

  sendForm.addEventListener("submit", async function (e) {
    e.preventDefault();
    if (!select.value) {
      return;
    }
    button.disabled = true;
    showNote("forms.sending");
    try {
      const resp = await fetch(card.dataset.api, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": meta("csrf-token") },
        body: JSON.stringify({ template: select.value }),
      });
      if (!resp.ok) {
        let detail = String(resp.status);
        try {
          detail = (await resp.json()).detail || detail;
        } catch (err) {
          // keep the status
        }
        showNote("forms.send_failed", { detail: detail });
        return;
      }
      onEvent(Object.assign({ type: "form" }, await resp.json()));
      showNote(null);
    } catch (err) {
      showNote("forms.send_failed", { detail: err.message || String(err) });
    } finally {
      button.disabled = templates.length === 0;
    }
  });

  button.disabled = true;
  loadTemplates();
})();
