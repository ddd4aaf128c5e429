// Copy buttons (the customer link and PIN on the advisor's pages): a <button data-copy=ID>
// copies the text of element ID. One listener on the document, so buttons added later
// (a new row on the start page) work too. Where the clipboard API is unavailable (plain
// HTTP), the text is selected so Ctrl+C does the rest.
"use strict";

(function () {
  const i18n = window.VB.i18n;

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    return Promise.reject(new Error("no clipboard"));
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest && event.target.closest("button[data-copy]");
    if (!button) {
      return;
    }
    const label = button.querySelector("[data-t]");
    const target = document.getElementById(button.dataset.copy);
    if (!target) {
      return;
    }
    copyText(target.textContent.trim()).then(
      function () {
        i18n.setText(label, "room.copied");
      },
      function () {
        const range = document.createRange();
        range.selectNodeContents(target);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        i18n.setText(label, "room.copy_failed");
      }
    );
    window.setTimeout(function () {
      i18n.setText(label, "room.copy");
    }, 2500);
  });
})();
