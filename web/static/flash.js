/* The Flash page: is there a Flash Player to run the SWF client? If not, say so above
 * the player area and offer the browser page (the <object>'s own fallback content says
 * the same without any script). Flash Player registers itself as the "Shockwave Flash"
 * plugin (navigator.plugins / the application/x-shockwave-flash MIME type), or in
 * Internet Explorer as the ActiveX control ShockwaveFlash.ShockwaveFlash.
 */
(function () {
  "use strict";
  var room = document.getElementById("flash-room");
  if (!room) return;

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
  room.setAttribute("data-flash", present ? "present" : "missing");
  if (!present) {
    document.getElementById("flash-missing").hidden = false;
    document.getElementById("flash-player").hidden = true;
  }
})();
