// The documents panel of both consultation pages (docs/web.md). The limits stand in the
// card before anything is chosen (the server's own, from data-* attributes); a file
// chosen or dropped is sent with XMLHttpRequest, whose upload progress fetch() cannot
// report; the server checks type and size again and answers 413/415/507, which become
// plain sentences here. The list comes from the `document` events of the events socket
// (room.js hands them here; the server replays them on every connect), so both sides see
// a new file at once, filled forms included. Also: how many documents there are for the
// end dialogs (the advisor's "end", the customer's "leave").
"use strict";

(function () {
  const VB = (window.VB = window.VB || {});
  const i18n = VB.i18n;
  const card = document.getElementById("documents");
  if (!card || !i18n) {
    return;
  }
  const role = card.dataset.role;
  const limits = {
    maxBytes: Number(card.dataset.maxBytes),
    quotaBytes: Number(card.dataset.quotaBytes),
    maxFiles: Number(card.dataset.maxFiles),
  };
  const list = document.getElementById("documents-list");
  const empty = card.querySelector(".documents-empty");
  const input = document.getElementById("documents-file");
  const drop = document.getElementById("documents-drop");
  const progress = document.getElementById("documents-progress");
  const bar = document.getElementById("documents-bar");
  const progressText = document.getElementById("documents-progress-text");
  const errorEl = document.getElementById("documents-error");
  const cancelButton = document.getElementById("documents-cancel");
  const docs = new Map(); // id -> the latest document event
  const queue = [];
  let busy = false;
  let current = null; // the XMLHttpRequest on its way, for "cancel"
  let ended = false;

  function meta(name) {
    const m = document.querySelector('meta[name="' + name + '"]');
    return m ? m.content : "";
  }

  // Binary units written "MB", as file managers do (templates.size_text does the same).
  function size(bytes) {
    const units = [
      [1024 * 1024 * 1024, "GB"],
      [1024 * 1024, "MB"],
      [1024, "KB"],
    ];
    for (let i = 0; i < units.length; i++) {
      if (bytes >= units[i][0]) {
        const value = bytes / units[i][0];
        const digits = Math.round(value * 10) % 10 === 0 ? 0 : 1;
        return i18n.number(value, digits) + " " + units[i][1];
      }
    }
    return bytes + " B";
  }

  function limitParams(name) {
    return {
      name: name,
      size: size(limits.maxBytes),
      total: size(limits.quotaBytes),
      files: limits.maxFiles,
    };
  }

  // -- the list --------------------------------------------------------------------------

  function fromKey(doc) {
    if (doc.from === role) {
      return "chat.me";
    }
    return doc.from === "advisor" ? "chat.advisor" : "chat.customer";
  }

  function item(doc) {
    const li = document.createElement("li");
    li.dataset.id = doc.id;
    li.dataset.kind = doc.kind || "upload";
    const name = document.createElement("span");
    name.className = "doc-name";
    name.textContent = doc.name;
    const details = document.createElement("span");
    details.className = "doc-meta";
    i18n.setText(details, "docs.meta", { size: size(doc.size), from: { t: fromKey(doc) } });
    const text = document.createElement("span");
    text.className = "doc-text";
    if (doc.kind === "form") {
      const badge = document.createElement("span");
      badge.className = "doc-kind";
      i18n.setText(badge, "docs.kind.form");
      text.append(badge, " ");
    }
    text.append(name, details);
    // The page's own URL (cookie), not the event's one-time link (that one is for Flash).
    const a = document.createElement("a");
    a.className = "button secondary doc-download";
    a.href = card.dataset.download + encodeURIComponent(doc.id);
    a.setAttribute("download", doc.name);
    const label = document.createElement("span");
    i18n.setText(label, "docs.download");
    a.append(label);
    a.setAttribute("aria-label", i18n.t("docs.download") + ": " + doc.name);
    li.append(text, a);
    return li;
  }

  function render() {
    // the server wrote the limits already; numbers follow a language switch from here
    const params = limitParams("");
    delete params.name;
    i18n.setText(document.getElementById("documents-limits"), "docs.limits", params);
    list.textContent = "";
    Array.from(docs.values())
      .sort(function (x, y) {
        return String(x.uploaded_at).localeCompare(String(y.uploaded_at));
      })
      .forEach(function (doc) {
        list.append(item(doc));
      });
    empty.hidden = docs.size > 0;
    renderReminders();
  }

  function count() {
    return docs.size;
  }

  // "There are n documents … download what you need" in the end/leave dialogs.
  function renderReminders() {
    const n = docs.size;
    const key =
      n === 0 ? "docs.save_reminder.none" : n === 1 ? "docs.save_reminder.one" : "docs.save_reminder.other";
    ["end-documents", "leave-documents"].forEach(function (id) {
      const el = document.getElementById(id);
      if (el) {
        i18n.setText(el, key, { n: n });
      }
    });
  }

  function onEvent(ev) {
    if (ev.type !== "document" || typeof ev.id !== "string") {
      return;
    }
    docs.set(ev.id, ev);
    render();
  }

  // -- uploading -------------------------------------------------------------------------

  function showError(key, params) {
    if (!key) {
      errorEl.hidden = true;
      return;
    }
    i18n.setText(errorEl, key, params);
    errorEl.hidden = false;
  }

  function showProgress(key, params, percent) {
    if (!key) {
      progress.hidden = true;
      return;
    }
    progress.hidden = false;
    i18n.setText(progressText, key, params);
    if (percent === null) {
      bar.removeAttribute("value"); // indeterminate while the server checks the file
    } else {
      bar.value = percent;
    }
  }

  function errorFor(status, name) {
    if (status === 413) {
      return ["docs.error.too_large", limitParams(name)];
    } else if (status === 415) {
      return ["docs.error.type", limitParams(name)];
    } else if (status === 507) {
      return ["docs.error.full", limitParams(name)];
    } else if (status === 404 || status === 410) {
      return ["docs.error.ended", {}];
    } else if (status === 0) {
      return ["docs.error.network", { name: name }];
    }
    return ["docs.error.other", { name: name, status: status }];
  }

  function send(file) {
    return new Promise(function (resolve) {
      const xhr = new XMLHttpRequest();
      current = xhr;
      xhr.open("POST", card.dataset.upload);
      xhr.withCredentials = true;
      if (role === "advisor") {
        xhr.setRequestHeader("X-CSRF-Token", meta("csrf-token"));
      }
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) {
          const percent = Math.min(100, Math.round((e.loaded / e.total) * 100));
          if (percent >= 100) {
            showProgress("docs.checking", { name: file.name }, null);
          } else {
            showProgress("docs.uploading", { name: file.name, percent: percent }, percent);
          }
        }
      });
      xhr.addEventListener("loadend", function () {
        current = null;
      });
      xhr.addEventListener("load", function () {
        resolve({ status: xhr.status, body: xhr.responseText });
      });
      xhr.addEventListener("abort", function () {
        resolve({ status: -1, body: "" }); // the person cancelled: nothing to report
      });
      ["error", "timeout"].forEach(function (kind) {
        xhr.addEventListener(kind, function () {
          resolve({ status: 0, body: "" });
        });
      });
      const form = new FormData();
      form.append("file", file, file.name);
      showProgress("docs.uploading", { name: file.name, percent: 0 }, 0);
      xhr.send(form);
    });
  }

  async function upload(file) {
    // Checked here too so that nobody waits for 20 MB to travel only to be refused; the
    // server decides in the end (type by content, the consultation's share).
    if (file.size > limits.maxBytes) {
      showError.apply(null, errorFor(413, file.name));
      return;
    }
    if (file.size === 0) {
      showError("docs.error.empty", { name: file.name });
      return;
    }
    if (docs.size >= limits.maxFiles) {
      showError.apply(null, errorFor(507, file.name));
      return;
    }
    const result = await send(file);
    showProgress(null);
    if (result.status === -1) {
      queue.length = 0; // "cancel" stops what was still waiting too
      return;
    }
    if (result.status === 201) {
      try {
        onEvent(Object.assign({ type: "document" }, JSON.parse(result.body)));
      } catch (err) {
        // the event brings it anyway
      }
      showError(null);
      return;
    }
    showError.apply(null, errorFor(result.status, file.name));
  }

  async function drain() {
    if (busy) {
      return;
    }
    busy = true;
    try {
      while (queue.length && !ended) {
        await upload(queue.shift());
      }
    } finally {
      busy = false;
      queue.length = 0;
    }
  }

  function add(files) {
    if (ended) {
      showError("docs.error.ended");
      return;
    }
    showError(null);
    Array.prototype.forEach.call(files, function (f) {
      queue.push(f);
    });
    drain();
  }

  cancelButton.addEventListener("click", function () {
    if (current) {
      current.abort();
    }
  });

  input.addEventListener("change", function () {
    add(input.files);
    input.value = ""; // the same file may be chosen again (after an error)
  });

  // Drag and drop (desktop): the whole card is the target.
  let depth = 0;
  const hint = card.querySelector(".drop-hint");

  function dragging(on) {
    card.classList.toggle("dragging", on);
    i18n.setText(hint, on ? "docs.drop_here" : "docs.drop");
  }

  card.addEventListener("dragenter", function (e) {
    if (e.dataTransfer && Array.prototype.indexOf.call(e.dataTransfer.types, "Files") >= 0) {
      depth += 1;
      dragging(true);
      e.preventDefault();
    }
  });
  card.addEventListener("dragover", function (e) {
    if (card.classList.contains("dragging")) {
      e.preventDefault();
      e.dataTransfer.dropEffect = "copy";
    }
  });
  card.addEventListener("dragleave", function () {
    depth = Math.max(0, depth - 1);
    if (depth === 0) {
      dragging(false);
    }
  });
  card.addEventListener("drop", function (e) {
    depth = 0;
    dragging(false);
    if (e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files.length) {
      e.preventDefault();
      add(e.dataTransfer.files);
    }
  });

  // The consultation is over (its files are gone): nothing more to upload or download.
  function end() {
    ended = true;
    input.disabled = true;
    drop.hidden = true;
    showProgress(null);
  }

  // Before the customer leaves: with documents there, ask first and remind them to save
  // what they need; without any, leave at once (the terms: leave at any time).
  function beforeLeave(proceed) {
    const dialog = document.getElementById("leave-dialog");
    if (docs.size === 0 || !dialog || typeof dialog.showModal !== "function") {
      proceed();
      return;
    }
    renderReminders();
    dialog.returnValue = "";
    dialog.addEventListener(
      "close",
      function () {
        if (dialog.returnValue === "confirm") {
          proceed();
        }
      },
      { once: true }
    );
    dialog.showModal();
  }

  i18n.onChange(render);
  render();
  VB.documents = { onEvent: onEvent, count: count, end: end, beforeLeave: beforeLeave };
})();
