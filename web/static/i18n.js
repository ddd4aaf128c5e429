// Page language: the strings come from the server's table for this language (JSON data
// block #vb-i18n, the same file as /static/i18n/{lang}.json). Elements rendered from the
// table carry data-t="key" (and data-t-params), so switching the language re-renders
// them in place, without a reload that would cut a running video call.
"use strict";

(function () {
  const VB = (window.VB = window.VB || {});
  const block = document.getElementById("vb-i18n");
  const data = block ? JSON.parse(block.textContent) : { lang: "de", strings: {} };
  let lang = data.lang;
  let strings = data.strings;
  const listeners = [];

  // {name} placeholders; a parameter may itself be {t: key, params: {...}}, translated
  // at render time so it follows a language switch too.
  function t(key, params) {
    const text = Object.prototype.hasOwnProperty.call(strings, key) ? strings[key] : key;
    if (!params) {
      return text;
    }
    return text.replace(/\{(\w+)\}/g, function (whole, name) {
      if (!Object.prototype.hasOwnProperty.call(params, name)) {
        return whole;
      }
      const value = params[name];
      if (value && typeof value === "object" && value.t) {
        return t(value.t, value.params);
      }
      return String(value);
    });
  }

  function paramsOf(el) {
    return el.dataset.tParams ? JSON.parse(el.dataset.tParams) : undefined;
  }

  // Set an element's text from the table and remember the key for a language switch.
  function setText(el, key, params) {
    el.dataset.t = key;
    if (params) {
      el.dataset.tParams = JSON.stringify(params);
    } else {
      delete el.dataset.tParams;
    }
    el.textContent = t(key, params);
  }

  const ATTRIBUTES = ["aria-label", "placeholder", "title"];

  function translateAll(root) {
    root.querySelectorAll("[data-t]").forEach(function (el) {
      el.textContent = t(el.dataset.t, paramsOf(el));
    });
    ATTRIBUTES.forEach(function (attr) {
      root.querySelectorAll("[data-t-" + attr + "]").forEach(function (el) {
        el.setAttribute(attr, t(el.getAttribute("data-t-" + attr)));
      });
    });
  }

  function number(value, digits) {
    return Number(value).toLocaleString(lang === "de" ? "de-DE" : "en-GB", {
      minimumFractionDigits: digits || 0,
      maximumFractionDigits: digits || 0,
    });
  }

  function time(seconds) {
    const d = seconds ? new Date(seconds * 1000) : new Date();
    return d.toLocaleTimeString(lang === "de" ? "de-DE" : "en-GB", {
      hour: "2-digit",
      minute: "2-digit",
    });
  }

  async function switchTo(code) {
    if (code === lang) {
      return;
    }
    const resp = await fetch("/static/i18n/" + encodeURIComponent(code) + ".json", {
      credentials: "omit",
    });
    if (!resp.ok) {
      throw new Error("language table " + code + ": " + resp.status);
    }
    strings = await resp.json();
    lang = code;
    document.documentElement.lang = code;
    translateAll(document);
    const titleKey = document.body.dataset.titleKey;
    if (titleKey) {
      const title = t(titleKey);
      const named = title.toLowerCase().indexOf(t("app.name").toLowerCase()) >= 0;
      document.title = named ? title : t("app.title", { title: title });
    }
    // a preference, not a secret: the server reads it for the next page
    document.cookie = "vb_lang=" + code + "; path=/; max-age=31536000; SameSite=Lax";
    const url = new URL(window.location.href);
    url.searchParams.set("lang", code);
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
    updateSwitches();
    listeners.forEach(function (fn) {
      fn(code);
    });
  }

  function updateSwitches() {
    document.querySelectorAll("a[data-lang-switch]").forEach(function (a) {
      const code = t("lang.switch_code");
      a.href = "?lang=" + code;
      a.hreflang = code;
      a.lang = code;
    });
  }

  // Pages with a live call switch in place; a plain link (?lang=) works everywhere else.
  if (document.body && document.body.dataset.liveLanguage === "1") {
    document.querySelectorAll("a[data-lang-switch]").forEach(function (a) {
      a.addEventListener("click", function (e) {
        e.preventDefault();
        switchTo(t("lang.switch_code")).catch(function () {
          window.location.href = a.href;
        });
      });
    });
  }

  VB.i18n = {
    t: t,
    setText: setText,
    translateAll: translateAll,
    number: number,
    time: time,
    lang: function () {
      return lang;
    },
    onChange: function (fn) {
      listeners.push(fn);
    },
    switchTo: switchTo,
  };
  VB.t = t;
})();
