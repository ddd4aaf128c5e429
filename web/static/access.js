// The customer's access on the advisor's consultation page: after too many wrong PINs the
// link is locked; the page shows it at once (an "access" event on the events socket,
// passed on by advisor-room.js) and "Neue PIN" issues a new PIN and link for the same
// consultation in one click (POST /api/sessions/{id}/access). The old link and PIN are
// dead from then on; the new ones replace them in the card, ready to copy.
"use strict";

(function () {
  const VB = window.VB;
  const room = document.getElementById("room");
  const button = document.getElementById("new-pin");
  if (!room || !button) {
    return;
  }
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : "";
  const url = "/api/sessions/" + encodeURIComponent(room.dataset.id) + "/access";
  const lockEl = document.getElementById("access-locked");

  function show(access) {
    lockEl.hidden = !access.locked;
    button.hidden = !access.locked;
    const pin = document.getElementById("customer-pin");
    const link = document.getElementById("customer-link");
    const flash = document.getElementById("flash-link");
    pin.textContent = access.pin_display;
    link.textContent = access.page_url;
    link.href = access.page_url;
    if (flash) {
      flash.textContent = access.flash_page_url;
      flash.href = access.flash_page_url;
    }
  }

  async function load(method) {
    const init = { method: method, credentials: "same-origin", cache: "no-store" };
    if (method === "POST") {
      init.headers = { "X-CSRF-Token": csrf };
    }
    const resp = await fetch(url, init);
    if (resp.ok) {
      show(await resp.json());
    }
  }

  button.addEventListener("click", function () {
    button.disabled = true;
    load("POST")
      .catch(function () {})
      .finally(function () {
        button.disabled = false;
      });
  });

  // A lock that happened while the events socket was down (a network drop, a sleeping
  // laptop) would go unseen until the next event: ask now and then, cheaply.
  window.setInterval(function () {
    if (!document.hidden) {
      load("GET").catch(function () {});
    }
  }, 15000);

  VB.access = {
    onEvent: function (ev) {
      if (ev.locked) {
        lockEl.hidden = false; // at once, before the fetch answers
        button.hidden = false;
      }
      load("GET").catch(function () {});
    },
  };
})();
