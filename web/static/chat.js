// The events WebSocket (chat, presence, camera/microphone state) with automatic
// re-connection, and the chat view shared by the advisor and customer pages.
// Chat text is always inserted with textContent, never as HTML.
"use strict";

(function () {
  const VB = (window.VB = window.VB || {});
  const BACKOFF_MS = [1000, 2000, 4000, 8000, 15000];

  // handlers: onOpen(), onEvent(ev), onDown() (lost, retrying), onEnded(reason)
  // pagePath: the page's own URL, probed (HEAD) after failed attempts to tell "server
  // unreachable" (keep trying) from "consultation over" (stop).
  class EventsSocket {
    constructor(path, pagePath, handlers) {
      this.path = path;
      this.pagePath = pagePath;
      this.handlers = handlers;
      this.ws = null;
      this.attempt = 0;
      this.timer = null;
      this.finished = false;
    }

    connect() {
      const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
      const ws = new WebSocket(scheme + "//" + window.location.host + this.path);
      this.ws = ws;
      const self = this;
      ws.addEventListener("open", function () {
        self.attempt = 0;
        self.handlers.onOpen();
      });
      ws.addEventListener("message", function (e) {
        let ev;
        try {
          ev = JSON.parse(e.data);
        } catch (err) {
          return;
        }
        if (ev && ev.type === "session_ended") {
          self.finish(ev.reason || "ended");
          return;
        }
        self.handlers.onEvent(ev);
      });
      ws.addEventListener("close", function () {
        if (self.ws !== ws || self.finished) {
          return;
        }
        self.ws = null;
        self.handlers.onDown();
        self.scheduleReconnect();
      });
    }

    async scheduleReconnect() {
      const index = Math.min(this.attempt, BACKOFF_MS.length - 1);
      this.attempt += 1;
      if (this.attempt >= 2 && (await this.consultationGone())) {
        this.finish("ended");
        return;
      }
      const self = this;
      const delay = BACKOFF_MS[index] * (0.8 + 0.4 * Math.random());
      this.timer = window.setTimeout(function () {
        self.timer = null;
        if (!self.finished) {
          self.connect();
        }
      }, delay);
    }

    async consultationGone() {
      try {
        const resp = await fetch(this.pagePath, { method: "HEAD", cache: "no-store" });
        return resp.status === 404;
      } catch (err) {
        return false; // server unreachable: keep trying
      }
    }

    isOpen() {
      return !!this.ws && this.ws.readyState === WebSocket.OPEN;
    }

    send(message) {
      if (!this.isOpen()) {
        return false;
      }
      this.ws.send(JSON.stringify(message));
      return true;
    }

    finish(reason) {
      if (this.finished) {
        return;
      }
      this.close();
      this.handlers.onEnded(reason);
    }

    // Close for good (leaving): no re-connection.
    close() {
      this.finished = true;
      window.clearTimeout(this.timer);
      if (this.ws) {
        const ws = this.ws;
        this.ws = null;
        ws.close(1000);
      }
    }
  }

  // The chat log and form inside `root` (#chat). send(text) returns whether it went out.
  class ChatView {
    constructor(root, me, send) {
      this.root = root;
      this.me = me;
      this.log = root.querySelector(".chat-log");
      this.empty = root.querySelector(".chat-empty");
      this.form = root.querySelector(".chat-form");
      this.input = this.form.querySelector("input[name=text]");
      this.button = this.form.querySelector("button");
      const self = this;
      this.form.addEventListener("submit", function (e) {
        e.preventDefault();
        const text = self.input.value.trim();
        if (text && send(text)) {
          self.input.value = ""; // kept when the socket is down, so nothing is lost
        }
      });
    }

    fromKey(role) {
      if (role === this.me) {
        return "chat.me";
      }
      return role === "advisor" ? "chat.advisor" : "chat.customer";
    }

    add(ev) {
      const li = document.createElement("li");
      li.className = ev.from === this.me ? "mine" : "theirs";
      const meta = document.createElement("span");
      meta.className = "meta";
      const who = document.createElement("span");
      who.className = "from";
      VB.i18n.setText(who, this.fromKey(ev.from));
      const time = document.createElement("time");
      time.className = "time";
      time.textContent = VB.i18n.time(ev.ts);
      meta.appendChild(who);
      meta.appendChild(time);
      const text = document.createElement("span");
      text.className = "text";
      text.textContent = ev.text;
      li.appendChild(meta);
      li.appendChild(text);
      this.append(li);
    }

    notice(key, params) {
      const li = document.createElement("li");
      li.className = "notice";
      VB.i18n.setText(li, key, params);
      this.append(li);
    }

    append(li) {
      if (this.empty) {
        this.empty.hidden = true;
      }
      this.log.appendChild(li);
      this.log.scrollTop = this.log.scrollHeight;
    }

    // The server replays the history on every (re)connect.
    clear() {
      this.log.textContent = "";
      if (this.empty) {
        this.empty.hidden = false;
      }
    }

    setEnabled(enabled) {
      this.input.disabled = !enabled;
      this.button.disabled = !enabled;
    }
  }

  VB.EventsSocket = EventsSocket;
  VB.ChatView = ChatView;
})();
