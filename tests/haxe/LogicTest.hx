import Logic;

/**
	The SWF's pure logic (web/flash/src/Logic.hx) under `haxe --interp`: no Flash Player
	needed. Run by tests/test_flash_page.py; prints "ok N" or exits 1 at the first failure.
**/
class LogicTest {
	static var checks = 0;

	static function eq<T>(got:T, want:T, what:String):Void {
		checks++;
		if (got != want) {
			Sys.println('FAIL $what: got $got, want $want');
			Sys.exit(1);
		}
	}

	public static function main():Void {
		fallbackOrderAndTimeouts();
		mutedDevices();
		ticketRefresh();
		cameraChoice();
		smallDecisions();
		clusterRedirect();
		Sys.println('ok $checks');
	}

	static function fallbackOrderAndTimeouts():Void {
		var a = Logic.attempts(["rtmp://h:1935/consult", "", "rtmpt://h:8080/consult"]);
		eq(a.length, 2, "empty URLs are left out");
		eq(a[0].url, "rtmp://h:1935/consult", "native RTMP first");
		eq(a[0].timeoutMs, 6000, "native timeout");
		eq(a[1].timeoutMs, 20000, "the RTMPT tunnel gets 20 s (a corporate proxy)");
		eq(a[0].nativeTls, false, "plain RTMP is no native TLS");
		var tls = Logic.attempts(["rtmps://h:1936/consult", "rtmps://h/consult"]);
		eq(tls[0].nativeTls, true, "native RTMPS first (proxyType best)");
		eq(tls[1].nativeTls, false, "then Flash's RTMPT over HTTPS");
		eq(tls[0].timeoutMs, 20000, "rtmps may fall back to the tunnel inside Flash");
		eq(tls[1].timeoutMs, 20000, "the HTTPS tunnel gets 20 s");
		eq(Logic.attempts(["rtmps://h/consult"])[0].nativeTls, true, "a lone rtmps is tried natively first");
		eq(Logic.isTunnel("RTMPT://h/consult"), true, "schemes are case-insensitive");
	}

	static function clusterRedirect():Void {
		var to = "rtmp://n2.example:1935/consult";
		eq(Logic.redirectTarget(302, to, 0), to, "ex.code 302 with ex.redirect: follow");
		eq(Logic.redirectTarget(302.0, to, 2), to, "AMF numbers are floats");
		eq(Logic.redirectTarget(302, to, 3), null, "at most three redirects in a row");
		eq(Logic.redirectTarget(null, to, 0), null, "no code: a real rejection");
		eq(Logic.redirectTarget(403, to, 0), null, "another code: a real rejection");
		eq(Logic.redirectTarget(302, null, 0), null, "no URL");
		eq(Logic.redirectTarget(302, "http://evil.example/consult", 0), null, "only RTMP schemes");
		eq(Logic.redirectTarget(302, "rtmp://n2/other", 0), null, "only our application");
		eq(Logic.redirectTarget(302, "RTMPS://n2:1936/consult", 0), "RTMPS://n2:1936/consult", "scheme case");
	}

	static function mutedDevices():Void {
		// allowed at once
		var g = new DeviceGate();
		eq(g.switchOn(false), Attach, "unmuted device: attach");
		eq(g.announced(), true, "announced on");
		eq(g.switchOff(), Detach, "off");
		eq(g.announced(), false, "announced off");
		// "Deny + Remember": muted, no dialog, no status event
		g = new DeviceGate();
		eq(g.switchOn(true), AskPermission, "muted: ask (privacy panel)");
		eq(g.announced(), false, "nothing announced before the answer");
		eq(g.muted(), Stay, "still muted while asking: not an answer");
		eq(g.announced(), false, "still nothing announced");
		eq(g.unmuted(), Attach, "allowed in the panel: attach now");
		eq(g.announced(), true, "announced only now");
		// denied later (Settings Manager) while on
		eq(g.muted(), Denied, "muted while on: denied");
		eq(g.state, Off, "toggle off");
		eq(g.unmuted(), Stay, "an unmute after that does not switch it on by itself");
		// a deny during a reconnect leaves the toggle off
		g = new DeviceGate();
		g.switchOn(false);
		eq(g.reconnected(true), Denied, "muted at reconnect: denied");
		eq(g.state, Off, "and off");
		eq(g.reconnected(false), Stay, "off stays off");
		g = new DeviceGate();
		g.switchOn(false);
		eq(g.reconnected(false), Attach, "still allowed: publish again");
		// asking, then the customer gives up
		g = new DeviceGate();
		g.switchOn(true);
		eq(g.switchOff(), Detach, "cancel while asking");
		eq(g.unmuted(), Stay, "a late unmute does not switch it on");
		eq(g.announced(), false, "nothing announced");
		// asking across a reconnect
		g = new DeviceGate();
		g.switchOn(true);
		eq(g.reconnected(true), Stay, "still asking");
		eq(g.reconnected(false), Attach, "answered meanwhile");
	}

	static function ticketRefresh():Void {
		var d = new DocTicket();
		eq(d.stale(0), true, "no URL: stale");
		eq(d.take(0), null, "nothing to open yet (ask, let the person click again)");
		d.set("https://h/doc?ticket=1", 1000);
		eq(d.stale(30000), false, "fresh for a minute");
		eq(d.stale(62000), true, "renewed after a minute (mouse-over, focus)");
		eq(d.take(50000), "https://h/doc?ticket=1", "opened from the click");
		eq(d.take(50001), null, "one use only");
		d.set("https://h/doc?ticket=2", 0);
		eq(d.take(110000), null, "too old to open safely (tickets last 120 s)");
	}

	static function cameraChoice():Void {
		eq(Logic.preferredCamera(["DV Video", "IIDC FireWire Video", "USB Video Class Video"]), 2, "Mac: the USB camera");
		eq(Logic.preferredCamera(["USB Video Class Video"]), 0, "only that one");
		eq(Logic.preferredCamera(["Integrated Webcam", "USB Video Class Video"]), 1, "USB class preferred");
		eq(Logic.preferredCamera(["Integrated Webcam"]), -1, "Windows: Flash's default");
		eq(Logic.preferredCamera(["DV Video", "Logitech HD"]), 1, "never the black DV device first");
		eq(Logic.preferredCamera([]), -1, "no camera");
		eq(Logic.cameraSilent(0, 4000, 0), false, "give it time");
		eq(Logic.cameraSilent(0, 6000, 0), true, "no frames after 5 s");
		eq(Logic.cameraSilent(0, 6000, 14.5), false, "frames");
	}

	static function smallDecisions():Void {
		eq(Logic.fit(640, 360, 480, 360).join(","), "0,45,480,270", "16:9 letterboxed, not stretched");
		eq(Logic.fit(640, 480, 480, 360).join(","), "0,0,480,360", "4:3 fills");
		eq(Logic.fit(360, 640, 480, 360).join(","), "139,0,203,360", "portrait pillarboxed");
		eq(Logic.fit(0, 0, 480, 360).join(","), "0,0,480,360", "unknown size");
		eq(Logic.echoMode("USB Audio Device"), "halfDuplex", "USB microphone");
		eq(Logic.echoMode("Mikrofon (Realtek High Definition Audio)"), "fullDuplex", "built-in");
		eq(Logic.noticeKey("capacity", "video"), "notice.capacity_video", "capacity notice");
		eq(Logic.noticeKey("capacity", "audio"), "notice.capacity_audio", "capacity audio");
		eq(Logic.noticeKey("x", null), "notice.other", "other notices");
		eq(Logic.uploadErrorKey(413), "upload.too_large", "413");
		eq(Logic.uploadErrorKey(415), "upload.type", "415");
		eq(Logic.uploadErrorKey(507), "upload.full", "507");
		eq(Logic.uploadErrorKey(500), "upload.failed", "other");
		eq(Logic.megabytes(20 * 1024 * 1024), 20, "MB");
		var table = ["advisor.present" => "x", "advisor.present_named" => "{name} ist da."];
		eq(Logic.namedKey("advisor.present", "Frau Schmidt", table.exists), "advisor.present_named", "named");
		eq(Logic.namedKey("advisor.present", "", table.exists), "advisor.present", "no display name");
		eq(Logic.namedKey("advisor.present", "  ", table.exists), "advisor.present", "blank name");
		eq(Logic.namedKey("leave", "Frau Schmidt", table.exists), "leave", "no named twin");
	}
}
