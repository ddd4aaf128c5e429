// The events WebSocket (chat, presence, camera/microphone state) with automatic
// re-connection, and the chat view shared by the advisor and customer pages.
// Chat text is always inserted with textContent, never as HTML; web addresses in it
// become links only for http and https (never javascript: or data:).
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

  // http(s) addresses in a message; trailing punctuation belongs to the sentence.
  const URL_RE = /\bhttps?:\/\/[^\s<>"]+/gi;
  const TRAILING_RE = /[.,;:!?)\]}'"»“]+$/;

  // The message text as nodes: plain text, and links for http(s) addresses, each
  // followed by the host it really leads to ("https://bank.de@evil.example" goes to
  // evil.example: that is what the reader is shown).
  function messageNodes(text) {
    const nodes = [];
    let last = 0;
    let match;
    URL_RE.lastIndex = 0;
    while ((match = URL_RE.exec(text)) !== null) {
      let raw = match[0];
      const trailing = raw.match(TRAILING_RE);
      if (trailing) {
        raw = raw.slice(0, raw.length - trailing[0].length);
      }
      let url = null;
      try {
        url = new URL(raw);
      } catch (err) {
        url = null;
      }
      if (!url || (url.protocol !== "http:" && url.protocol !== "https:") || !url.hostname) {
        continue;
      }
      if (match.index > last) {
        nodes.push(document.createTextNode(text.slice(last, match.index)));
      }
      const a = document.createElement("a");
      a.href = url.href;
      a.textContent = raw;
      a.target = "_blank";
      a.rel = "noopener noreferrer"; // the opened page gets neither our window nor our URL
      a.className = "chat-link";
      a.title = VB.i18n.t("chat.link_title", { host: url.host });
      const host = document.createElement("span");
      host.className = "link-host";
      host.textContent = " (" + url.host + ")";
      nodes.push(a, host);
      last = match.index + raw.length;
      URL_RE.lastIndex = last;
    }
    if (last < text.length) {
      nodes.push(document.createTextNode(text.slice(last)));
    }
    return nodes;
  }

  // The tab's title: the page's own, after what wants attention – "(2)" unread messages,
  // "Kunde wartet auf Einlass" – so it shows in the tab while the page is out of sight.
  // A language switch gives the page a new title of its own (i18n.js).
  const title = {
    base: document.title,
    parts: {},
    set: function (name, text) {
      this.parts[name] = text || "";
      this.render();
    },
    render: function () {
      const alert = this.parts.alert ? this.parts.alert + " – " : "";
      const unread = this.parts.unread ? this.parts.unread + " " : "";
      document.title = unread + alert + this.base;
    },
  };
  if (VB.i18n) {
    VB.i18n.onChange(function () {
      title.base = document.title;
      title.render();
    });
  }

  // "… schreibt": shown this long after the other side's last typing event (the gateway
  // passes one per 2 s at most while they type), and gone with their message.
  const TYPING_SHOWN_MS = 4500;
  // a typing event is sent at most this often while the input changes
  const TYPING_SEND_MS = 1500;

  // The chat log and form inside `root` (#chat). send(text) returns whether it went out.
  // options: typing() sends a typing event; typingText(role) the [key, params] shown
  // while `role` types.
  class ChatView {
    constructor(root, me, send, options) {
      options = options || {};
      this.root = root;
      this.me = me;
      this.log = root.querySelector(".chat-log");
      this.empty = root.querySelector(".chat-empty");
      this.form = root.querySelector(".chat-form");
      this.input = this.form.querySelector("input[name=text]");
      this.button = this.form.querySelector("button");
      const self = this;
      // Messages from the other side while the chat is out of sight (scrolled away on
      // a phone, another tab) are counted on a button that brings the chat into view.
      this.unread = 0;
      this.inView = true;
      // newest message counted so far (server time): the history replayed after a
      // reconnect is not new again, nor is what was said before this page opened
      this.seenUntil = Date.now() / 1000;
      this.badge = document.createElement("button");
      this.badge.type = "button";
      this.badge.className = "unread-badge";
      this.badge.hidden = true;
      this.badge.addEventListener("click", function () {
        self.root.scrollIntoView({ block: "end" });
        self.input.focus({ preventScroll: true });
        self.markRead();
      });
      root.parentNode.insertBefore(this.badge, root);
      this.typingEl = root.querySelector(".typing");
      this.typingTimer = null;
      this.typingText = options.typingText || null;
      let typingSent = 0;
      this.input.addEventListener("input", function () {
        const now = Date.now();
        if (options.typing && self.input.value.trim() && now - typingSent > TYPING_SEND_MS) {
          typingSent = now;
          options.typing();
        }
      });
      if (typeof window.IntersectionObserver === "function") {
        new IntersectionObserver(
          function (entries) {
            self.inView = entries[entries.length - 1].isIntersecting;
            if (self.inView && !document.hidden) {
              self.markRead();
            }
          },
          { threshold: 0.5 }
        ).observe(this.form);
      }
      document.addEventListener("visibilitychange", function () {
        if (!document.hidden && self.inView) {
          self.markRead();
        }
      });
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

    // Returns whether this is a new message from the other side (not one replayed).
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
      messageNodes(String(ev.text)).forEach(function (node) {
        text.appendChild(node);
      });
      li.appendChild(meta);
      li.appendChild(text);
      this.append(li);
      const fresh = typeof ev.ts === "number" && ev.ts > this.seenUntil;
      if (fresh) {
        this.seenUntil = ev.ts;
      }
      if (ev.from !== this.me) {
        this.hideTyping();
      }
      if (fresh && ev.from !== this.me && (!this.inView || document.hidden)) {
        this.unread += 1;
        this.renderUnread();
      }
      return fresh && ev.from !== this.me;
    }

    showTyping(role) {
      if (!this.typingEl || role === this.me || !this.typingText) {
        return;
      }
      const text = [].concat(this.typingText(role));
      VB.i18n.setText(this.typingEl, text[0], text[1]);
      this.typingEl.hidden = false;
      window.clearTimeout(this.typingTimer);
      const self = this;
      this.typingTimer = window.setTimeout(function () {
        self.hideTyping();
      }, TYPING_SHOWN_MS);
    }

    hideTyping() {
      if (this.typingEl) {
        window.clearTimeout(this.typingTimer);
        this.typingEl.hidden = true;
      }
    }

    renderUnread() {
      title.set("unread", this.unread ? "(" + this.unread + ")" : "");
      this.badge.hidden = this.unread === 0;
      if (this.unread) {
        VB.i18n.setText(this.badge, this.unread === 1 ? "chat.unread.one" : "chat.unread.other", {
          n: this.unread,
        });
      }
    }

    markRead() {
      this.unread = 0;
      this.renderUnread();
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

    // The server replays the history on every (re)connect: what it replays was seen or
    // counted before. (room.js clears, then the snapshot arrives in the first messages.)
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
  VB.title = title;
})();
