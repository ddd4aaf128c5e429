// Chat box for the advisor and customer pages: connects to the events WebSocket named
// in data-events (same origin; the browser sends the HttpOnly cookie), renders chat and
// presence events. Text is always inserted with textContent, never as HTML.
"use strict";

(function () {
  const root = document.getElementById("chat");
  if (!root) {
    return;
  }
  const me = root.dataset.role;
  const otherName = root.dataset.other || "Gegenüber";
  const log = root.querySelector(".chat-log");
  const form = root.querySelector(".chat-form");
  const input = form.querySelector("input[name=text]");
  const status = root.querySelector(".status");
  const otherState = root.querySelector(".other-state");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(scheme + "//" + location.host + root.dataset.events);
  let ended = false;

  function timeOf(ts) {
    const d = ts ? new Date(ts * 1000) : new Date();
    return d.toLocaleTimeString("de-DE", { hour: "2-digit", minute: "2-digit" });
  }

  function line(cls, from, text, ts) {
    const li = document.createElement("li");
    if (cls) {
      li.className = cls;
    }
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = timeOf(ts);
    li.appendChild(time);
    if (from) {
      const who = document.createElement("span");
      who.className = "from";
      who.textContent = from + ":";
      li.appendChild(who);
    }
    li.appendChild(document.createTextNode(text));
    log.appendChild(li);
    log.scrollTop = log.scrollHeight;
  }

  ws.addEventListener("open", function () {
    status.textContent = "Verbunden.";
  });

  ws.addEventListener("message", function (e) {
    let ev;
    try {
      ev = JSON.parse(e.data);
    } catch (err) {
      return;
    }
    switch (ev.type) {
      case "chat":
        line("", ev.from === me ? "Sie" : otherName, ev.text, ev.ts);
        break;
      case "participant":
        if (ev.role !== me) {
          otherState.textContent = ev.present ? "anwesend" : "nicht anwesend";
        }
        break;
      case "error":
        line("notice", "", "Hinweis: " + ev.detail);
        break;
      case "session_ended":
        ended = true;
        status.textContent = "Die Beratung ist beendet.";
        input.disabled = true;
        break;
      default:
        break;
    }
  });

  ws.addEventListener("close", function () {
    if (!ended) {
      status.textContent = "Die Verbindung ist getrennt. Bitte laden Sie die Seite neu.";
    }
    input.disabled = true;
  });

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    const text = input.value.trim();
    if (!text || ws.readyState !== WebSocket.OPEN) {
      return;
    }
    ws.send(JSON.stringify({ type: "chat", text: text }));
    input.value = "";
  });

  const leave = document.getElementById("leave");
  if (leave) {
    leave.addEventListener("click", function () {
      ended = true;
      ws.close(1000);
      status.textContent = "Sie haben die Beratung verlassen.";
      leave.disabled = true;
    });
  }
})();
