// The customer's end screen (docs/web.md): shown in the "left" card when the
// consultation is over or the customer left. It says what was (or will be) deleted, whom
// to ask next (the bank's contact, rendered by the server), and takes one anonymous
// rating of 1 to 5 stars (POST /k/{id}/feedback; the server keeps only the number, in the
// consultation's statistics row). customer.js calls VB.endScreen.show(why).
"use strict";

(function () {
  const VB = (window.VB = window.VB || {});
  const i18n = VB.i18n;
  const screen = document.getElementById("end-screen");
  if (!screen || !i18n) {
    return;
  }
  const deleted = document.getElementById("end-deleted");
  const form = document.getElementById("feedback-form");
  const note = document.getElementById("feedback-note");
  const button = form.querySelector("button[type=submit]");

  function documentsParam() {
    const n = VB.documents ? VB.documents.count() : 0;
    const key = n === 0 ? "end.documents.none" : n === 1 ? "end.documents.one" : "end.documents.other";
    return { t: key, params: { n: n } };
  }

  // why: "ended" (the consultation is over) or "left" (the customer left; it runs on).
  function show(why) {
    if (VB.documents) {
      VB.documents.end();
    }
    const asking = document.getElementById("leave-dialog");
    if (asking && asking.open) {
      asking.close(); // ended while the customer was asked whether to leave
    }
    i18n.setText(deleted, why === "ended" ? "end.deleted.ended" : "end.deleted.left", {
      documents: documentsParam(),
    });
    screen.hidden = false;
  }

  function showNote(key, kind) {
    i18n.setText(note, key);
    note.className = kind;
    note.hidden = false;
  }

  function done() {
    form.querySelectorAll("input, button").forEach(function (el) {
      el.disabled = true;
    });
    showNote("end.feedback.thanks", "done");
  }

  form.addEventListener("submit", async function (e) {
    e.preventDefault();
    const chosen = form.querySelector("input[name=rating]:checked");
    if (!chosen) {
      showNote("end.feedback.pick", "error");
      return;
    }
    button.disabled = true;
    let status = 0;
    try {
      const resp = await fetch(form.dataset.url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ rating: Number(chosen.value) }),
      });
      status = resp.status;
    } catch (err) {
      status = 0;
    }
    if (status === 201 || status === 409) {
      done(); // 409: this consultation has its rating already (another tab, a rejoin)
    } else {
      button.disabled = false;
      showNote("end.feedback.failed", "error");
    }
  });

  VB.endScreen = { show: show };
})();
