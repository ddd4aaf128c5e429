/* The Flash page (and its PIN form): is there a Flash Player to run the SWF client? If
 * none is detected, say so first, above the PIN form or the player area, and offer the
 * browser page (the <object>'s own fallback content says the same without any script).
 *
 * The player is never hidden: detection is only a hint. Internet Explorer 11 hides its
 * ActiveX controls from scripts in some modes (ActiveX filtering, Enterprise Mode), and
 * Chrome 56+ hides Flash from navigator.plugins until the person allows the site, so
 * hiding the <object> would also hide Chrome's click-to-enable placeholder.
 *
 * ES5 only (checked with es-check es5): this page runs in the browsers that ran Flash.
 */
(function () {
  "use strict";
  var notice = document.getElementById("flash-missing");
  if (!notice) return;

  function hasFlash() {
    try {
      if (navigator.plugins && navigator.plugins["Shockwave Flash"]) return true;
      var type = navigator.mimeTypes && navigator.mimeTypes["application/x-shockwave-flash"];
      if (type && type.enabledPlugin) return true;
    } catch (e) {
      /* fall through */
    }
    try {
      if (window.ActiveXObject) {
        return Boolean(new window.ActiveXObject("ShockwaveFlash.ShockwaveFlash"));
      }
    } catch (e) {
      /* no ActiveX control */
    }
    return false;
  }

  var present = hasFlash();
  var room = document.getElementById("flash-room");
  (room || document.body).setAttribute("data-flash", present ? "present" : "missing");
  if (!present) {
    notice.removeAttribute("hidden");
    // The same words inside the player area would only repeat the notice; the player
    // itself stays (a plugin that is there replaces this fallback content anyway).
    var copies = document.querySelectorAll(".flash-ratio .flash-fallback");
    for (var i = 0; i < copies.length; i++) copies[i].setAttribute("hidden", "");
  }
})();
