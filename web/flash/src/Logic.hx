/**
	The client's decisions, apart from every Flash API so that they run without a player:
	`haxe --interp` runs `tests/haxe/LogicTest.hx` against this file (tests/test_flash_page.py).
	Time is passed in (milliseconds, `flash.Lib.getTimer()` in the player), as aioquic does.
**/
class Logic {
	/** Native RTMP answers within a second or two; 6 s allow a slow line. **/
	public static inline var NATIVE_TIMEOUT_MS = 6000;

	/** RTMPT/RTMPTS through a corporate proxy: the first poll alone may take seconds, and
		`rtmps://` with `proxyType = "best"` falls back to the tunnel inside Flash itself.
		Killing it after 5 s made slow tunnels loop for ever (issue 12). **/
	public static inline var TUNNEL_TIMEOUT_MS = 20000;

	/** How long one attempt may take before the next URL is tried. **/
	public static function connectTimeout(url:String):Int
		return isTunnel(url) ? TUNNEL_TIMEOUT_MS : NATIVE_TIMEOUT_MS;

	/** `rtmpt://`, `rtmpte://` and every `rtmps://` (RTMPT over HTTPS on the web port, or
		native TLS that Flash may itself turn into the tunnel) are slow to open. **/
	public static function isTunnel(url:String):Bool {
		var scheme = url.split(":")[0].toLowerCase();
		return scheme == "rtmpt" || scheme == "rtmpte" || scheme == "rtmps";
	}

	/** A line about the advisor: its "_named" twin (with `{name}`) when the advisor has a
		display name (FlashVar `advisor`) and the table has one, else the neutral key. **/
	public static function namedKey(key:String, name:String, has:String->Bool):String {
		var twin = key + "_named";
		return name != null && StringTools.trim(name) != "" && has(twin) ? twin : key;
	}

	/** At most this many redirects in a row (a misconfigured cluster must not loop). **/
	public static inline var MAX_REDIRECTS = 3;

	/** Where a `NetConnection.Connect.Rejected` sends us, as Flash Media Server and Wowza
		(and the gateway in cluster mode, docs/cluster.md) say it: `info.ex.code` 302 and
		`info.ex.redirect`, an `rtmp`/`rtmps`/`rtmpt` URL of the same application. Null:
		no redirect (a real rejection), a foreign scheme, or too many redirects already. **/
	public static function redirectTarget(code:Dynamic, redirect:Dynamic, redirectsSoFar:Int):String {
		if (redirectsSoFar >= MAX_REDIRECTS || code != 302 || !Std.isOfType(redirect, String))
			return null;
		var url:String = redirect;
		var scheme = url.split(":")[0].toLowerCase();
		if (scheme != "rtmp" && scheme != "rtmps" && scheme != "rtmpt" && scheme != "rtmpte")
			return null;
		return StringTools.endsWith(url, "/consult") ? url : null;
	}

	/** The connect attempts in order, each with its timeout; empty URLs are left out. **/
	public static function attempts(urls:Array<String>):Array<Attempt> {
		var out:Array<Attempt> = [];
		for (url in urls)
			if (url != null && url != "")
				out.push({url: url, timeoutMs: connectTimeout(url), nativeTls: out.length == 0 && StringTools.startsWith(url, "rtmps://")});
		return out;
	}

	/** The camera to ask Flash for, as an index into `Camera.names` (-1: Flash's default).
		On Macs `Camera.getCamera()` often picks "DV Video" or "IIDC FireWire Video", which
		give a black picture: the built-in iSight/FaceTime camera and USB webcams appear as
		"USB Video Class Video". Else the first camera that is not one of those. **/
	public static function preferredCamera(names:Array<String>):Int {
		for (i in 0...names.length)
			if (names[i] == "USB Video Class Video")
				return i;
		var dud = ["DV Video", "IIDC FireWire Video"];
		var firstDud = names.length > 0 && dud.indexOf(names[0]) >= 0;
		if (!firstDud)
			return -1;
		for (i in 0...names.length)
			if (dud.indexOf(names[i]) < 0)
				return i;
		return -1;
	}

	/** A camera switched on this long without one frame delivers none (black, or taken
		by another program). **/
	public static inline var NO_FRAMES_AFTER_MS = 5000;

	public static function cameraSilent(onSinceMs:Int, nowMs:Int, currentFps:Float):Bool
		return nowMs - onSinceMs >= NO_FRAMES_AFTER_MS && !(currentFps > 0);

	/** The echo canceller's mode: full duplex where the microphone is apart from the
		speakers' path; USB microphones (often a webcam's, next to loud speakers) in half
		duplex, as Adobe advises and as Flash itself defaults for them
		(`MicrophoneEnhancedOptions.mode`). **/
	public static function echoMode(micName:String):String
		return micName != null && micName.toLowerCase().indexOf("usb") >= 0 ? "halfDuplex" : "fullDuplex";

	/** Where to draw a `srcW`×`srcH` picture in a `boxW`×`boxH` area without stretching
		it: [x, y, width, height], letterboxed and centred. **/
	public static function fit(srcW:Float, srcH:Float, boxW:Float, boxH:Float):Array<Float> {
		if (!(srcW > 0) || !(srcH > 0))
			return [0, 0, boxW, boxH];
		var scale = Math.min(boxW / srcW, boxH / srcH);
		var w = Math.round(srcW * scale);
		var h = Math.round(srcH * scale);
		return [Math.round((boxW - w) / 2), Math.round((boxH - h) / 2), w, h];
	}

	/** The string key for a `notice` event (the gateway's capacity refusals). **/
	public static function noticeKey(code:String, kind:String):String {
		if (code == "capacity")
			return kind == "audio" ? "notice.capacity_audio" : "notice.capacity_video";
		return "notice.other";
	}

	/** The string key for an upload's HTTP status (web/documents.py). **/
	public static function uploadErrorKey(status:Int):String {
		return switch (status) {
			case 413: "upload.too_large";
			case 415: "upload.type";
			case 507: "upload.full";
			case 403: "upload.expired";
			default: "upload.failed";
		}
	}

	/** File types the gateway accepts (checked by content there; this only filters the
		file dialog): `gateway/documents.py`. **/
	public static inline var UPLOAD_TYPES = "*.pdf;*.png;*.jpg;*.jpeg;*.gif;*.webp;*.doc;*.docx;*.xls;*.xlsx;*.ppt;*.pptx;*.odt;*.ods;*.odp;*.odg";

	/** Megabytes for the limit line ("höchstens 20 MB"). **/
	public static function megabytes(bytes:Float):Int
		return Math.floor(bytes / (1024 * 1024));
}

typedef Attempt = {url:String, timeoutMs:Int, nativeTls:Bool};

/** What the client must do after a camera/microphone decision. **/
enum DeviceAction {
	/** nothing changes **/
	Stay;

	/** attach the device to the publishing stream and announce it on **/
	Attach;

	/** detach it and announce it off **/
	Detach;

	/** the device is muted (not allowed yet, or "Deny + Remember"): tell the customer
		what to do and open `Security.showSettings(SecurityPanel.PRIVACY)`; announce
		nothing yet **/
	AskPermission;

	/** it was on (or asked for) and is muted now: off, detached, toggle off, say why **/
	Denied;
}

enum DeviceState {
	Off;
	Asking;
	On;
}

/**
	One camera or microphone: the customer's wish and Flash Player's permission.

	`Camera.muted`/`Microphone.muted` is true until the person allows access, and stays
	true without any dialog or `status` event after "Deny + Remember" or a block in the
	Settings Manager. So the device is attached and announced as on (`media(true)`) only
	when it is really unmuted: at once, or after the privacy panel was answered (a
	`Camera.Unmuted` status, or the muted flag seen false while asking). Table (state,
	event → state, action):

	| state  | switchOn(muted)        | switchOn(!muted) | switchOff     | unmuted        | muted          | reconnected(muted) | reconnected(!muted) |
	|--------|------------------------|------------------|---------------|----------------|----------------|--------------------|---------------------|
	| Off    | Asking, AskPermission  | On, Attach       | Off, Stay     | Off, Stay      | Off, Stay      | Off, Stay          | Off, Stay           |
	| Asking | Asking, AskPermission  | On, Attach       | Off, Detach   | On, Attach     | Asking, Stay   | Asking, Stay       | On, Attach          |
	| On     | On, Stay               | On, Stay         | Off, Detach   | On, Stay       | Off, Denied    | Off, Denied        | On, Attach          |
**/
class DeviceGate {
	public var state(default, null):DeviceState = Off;

	public function new() {}

	/** Whether `media()` may say this device is on. **/
	public function announced():Bool
		return state == On;

	public function switchOn(muted:Bool):DeviceAction {
		if (state == On)
			return Stay;
		if (muted) {
			state = Asking;
			return AskPermission;
		}
		state = On;
		return Attach;
	}

	public function switchOff():DeviceAction {
		if (state == Off)
			return Stay;
		state = Off;
		return Detach;
	}

	public function unmuted():DeviceAction {
		if (state != Asking)
			return Stay;
		state = On;
		return Attach;
	}

	public function muted():DeviceAction {
		if (state != On)
			return Stay; // while asking, muted is simply the answer not given yet
		state = Off;
		return Denied;
	}

	/** After a reconnect, publishing again: a device denied meanwhile stays off. **/
	public function reconnected(muted:Bool):DeviceAction {
		return switch (state) {
			case Off: Stay;
			case Asking: muted ? Stay : unmuted();
			case On: if (muted) {
					state = Off;
					Denied;
				} else Attach;
		}
	}
}

/**
	One entry of the documents list and its one-time URL (document tickets last two
	minutes, gateway/tickets.py). A pop-up blocker lets `navigateToURL(_blank)` through
	only inside the click or key handler, so a link opens only there and only with a URL
	already at hand; the handler asks for the next one (and a Responder never opens
	anything). A URL older than `FRESH_MS` is renewed on mouse-over and keyboard focus.
**/
class DocTicket {
	public static inline var FRESH_MS = 60000;

	/** Past this age a URL may expire before the browser fetches it: not opened. **/
	public static inline var USABLE_MS = 100000;

	public var url(default, null):String;

	var since = 0;

	public function new() {}

	public function set(url:String, nowMs:Int):Void {
		this.url = url;
		since = nowMs;
	}

	public function stale(nowMs:Int):Bool
		return url == null || nowMs - since > FRESH_MS;

	/** The URL to open now, used up; null when none is fresh enough (then: ask for one
		and let the person click again). **/
	public function take(nowMs:Int):String {
		var u = url;
		url = null;
		return u != null && nowMs - since <= USABLE_MS ? u : null;
	}
}
