import flash.Lib;
import flash.display.Sprite;
import flash.display.StageAlign;
import flash.display.StageScaleMode;
import flash.events.AsyncErrorEvent;
import flash.events.DataEvent;
import flash.events.Event;
import flash.events.FocusEvent;
import flash.events.HTTPStatusEvent;
import flash.events.ProgressEvent;
import flash.events.IOErrorEvent;
import flash.events.KeyboardEvent;
import flash.events.NetStatusEvent;
import flash.events.SecurityErrorEvent;
import flash.events.StatusEvent;
import flash.events.TimerEvent;
import flash.media.Camera;
import flash.media.Microphone;
import flash.media.Video;
import flash.net.FileFilter;
import flash.net.FileReference;
import flash.net.NetConnection;
import flash.net.NetStream;
import flash.net.Responder;
import flash.net.URLRequest;
import flash.net.URLRequestMethod;
import flash.system.Security;
import flash.system.SecurityPanel;
import flash.text.TextField;
import flash.text.TextFormatAlign;
import flash.utils.Timer;
import Ui.Button;
import Logic;

/**
	The customer's Flash Player 11 client of the Video-Beratung gateway.

	FlashVars (set by the gateway's Flash page): `token` (the customer token, sent as the
	first extra `connect` argument), `rtmp` (tried first, `rtmp://host:1935/consult`, or
	native `rtmps://` under TLS), `rtmpt` (the fallback on the web port: `rtmpt://`, or
	`rtmps://` = RTMPT over HTTPS under TLS), `publish`/`play` (the own and the other
	role's stream name), `base` (the gateway's origin, for document and form links),
	`lang` (`de` default, `en`), `advisor` (the advisor's display name), `color` (the bank's
	primary colour, rrggbb), `bank` (the bank's name for the title bar), `screen` (the stream
	name of the advisor's screen share).

	Camera and microphone are off until the customer switches them on; nothing is
	published before that, and the server is told the state with `media(camera, mic)`
	only once Flash Player really gives the device (`Logic.DeviceGate`: a device denied
	with "Deny + Remember" is muted without any dialog or event).
	Status lines are also written with `trace()` (the debug player's log; Ruffle's trace
	observer in the tests): the UI text is drawn into a canvas and not otherwise readable.
**/
class VideoBeratung extends Sprite {
	static inline var W = 800;
	static inline var H = 560;
	static inline var RECONNECT_MS = 3000;
	static inline var MAX_CHAT = 2000;
	static inline var MAX_DOCS = 5;
	static inline var VIDEO_W = 480;
	static inline var VIDEO_H = 360;

	static var TABLES:Map<String, Map<String, String>> = ["de" => Strings.table("de"), "en" => Strings.table("en")];

	var strings:Map<String, String>;
	var token:String;
	var attempts:Array<Attempt>;
	var redirects = 0; // NetConnection.Connect.Rejected with ex.redirect followed so far
	var publishName:String;
	var playName:String;
	var base:String;

	var nc:NetConnection;
	var attempt = 0;
	var connectTimer:Timer;
	var connected = false;
	var rejected = false;
	var ended = false;
	var left = false;
	/** Replaced by a newer publisher of this participant (another tab): stand down. **/
	var displaced = false;

	var playStream:NetStream;
	var publishStream:NetStream;
	var camera:Camera;
	var mic:Microphone;
	var cameraGate = new DeviceGate();
	var micGate = new DeviceGate();
	var cameraOnSince = 0;
	var noFramesTold = false;
	var remoteLive = true;
	// the advisor's shared screen (FlashVar "screen": its stream name; docs/web.md
	// "Screen sharing"), played as a second stream and shown instead of the camera
	var screenName:String;
	var screenStream:NetStream;
	var screenVideo:Video;
	var screenBanner:Sprite;
	var screenLive = false;
	var advisorCamera = true;

	var status:TextField;
	var presence:TextField;
	var privacy:TextField;
	var notice:TextField;
	var banner:Sprite;
	var remoteVideo:Video;
	var placeholder:TextField;
	var selfView:Sprite;
	var selfVideo:Video;
	var cameraButton:Button;
	var micButton:Button;
	var leaveButton:Button;
	var chatLog:TextField;
	var chatEmpty:TextField;
	var chatInput:TextField;
	var sendButton:Button;
	var docs:Sprite;
	var docsEmpty:TextField;
	var docsLine:TextField;
	var uploadButton:Button;
	var uploadLimits:TextField;
	var fileRef:FileReference;
	var uploadStatus = 0;
	var maxUpload:Float = 20 * 1024 * 1024;
	var links = new Map<String, DocLink>();
	var order:Array<DocLink> = [];
	var lang:String;
	// the advisor's display name (FlashVar "advisor", from the account); "" = neutral wording
	var advisorName:String;
	// the bank's name (FlashVar "bank"), shown in the title bar; "" = the service's name only
	var bankName:String;

	public static function main():Void {
		var stage = Lib.current.stage;
		stage.scaleMode = StageScaleMode.SHOW_ALL;
		stage.align = StageAlign.TOP;
		Lib.current.addChild(new VideoBeratung());
	}

	public function new() {
		super();
		var params:Dynamic = Lib.current.loaderInfo.parameters;
		lang = param(params, "lang", "de");
		advisorName = StringTools.trim(param(params, "advisor", ""));
		Ui.primary = Ui.parseColor(param(params, "color", ""), Ui.PRIMARY);
		bankName = StringTools.trim(param(params, "bank", ""));
		strings = TABLES.exists(lang) ? TABLES.get(lang) : TABLES.get("de");
		token = param(params, "token", "");
		publishName = param(params, "publish", "customer");
		playName = param(params, "play", "advisor");
		screenName = param(params, "screen", "");
		base = param(params, "base", "");
		attempts = Logic.attempts([param(params, "rtmp", ""), param(params, "rtmpt", "")]);
		build();
		report("ui", [
			t("title"), t("camera.turn_on"), t("mic.turn_on"), t("leave"), t("chat.title"), t("chat.send"),
			t("docs.title"), t("privacy.off"), t("upload.button")
		].join(" | "));
		if (token == "" || attempts.length == 0) {
			fail(t("status.no_token"));
			enableMedia(false);
			return;
		}
		connect();
	}

	static function param(params:Dynamic, name:String, fallback:String):String {
		var v:Dynamic = Reflect.field(params, name);
		return v == null ? fallback : Std.string(v);
	}

	function t(key:String, ?params:Dynamic):String {
		var s = strings.get(key);
		if (s == null)
			return key;
		if (params != null)
			for (f in Reflect.fields(params))
				s = StringTools.replace(s, "{" + f + "}", Std.string(Reflect.field(params, f)));
		return s;
	}

	/** A line about the advisor: its "_named" twin with the display name when there is one. **/
	function who(key:String):String {
		return t(Logic.namedKey(key, advisorName, strings.exists), {name: advisorName});
	}

	/** One line for the debug player's log (and the tests); never chat text or tokens. **/
	static function report(kind:String, text:String):Void {
		Lib.trace("vb-" + kind + ": " + text);
	}

	// -- layout ------------------------------------------------------------------------------

	function build():Void {
		graphics.beginFill(0xF4F6F8);
		graphics.drawRect(0, 0, W, H);
		graphics.endFill();
		graphics.beginFill(Ui.primary);
		graphics.drawRect(0, 0, W, 40);
		graphics.endFill();

		var title = Ui.label(bankName == "" ? t("title") : bankName + " · " + t("title"), 18, 0xFFFFFF, true);
		title.x = 16;
		title.y = 8;
		addChild(title);
		status = Ui.label(t("status.connecting"), 13, 0xFFFFFF, true, 0, TextFormatAlign.RIGHT);
		status.x = W - 16 - status.width;
		status.y = 11;
		addChild(status);

		// the advisor's video, large
		var stageBox = new Sprite();
		stageBox.graphics.beginFill(Ui.STAGE_DARK);
		stageBox.graphics.drawRect(0, 0, VIDEO_W, VIDEO_H);
		stageBox.graphics.endFill();
		stageBox.x = 16;
		stageBox.y = 52;
		addChild(stageBox);
		remoteVideo = new Video(VIDEO_W, VIDEO_H);
		remoteVideo.smoothing = true;
		stageBox.addChild(remoteVideo);
		screenVideo = new Video(VIDEO_W, VIDEO_H);
		screenVideo.smoothing = true; // slides and text: scaled smoothly
		screenVideo.visible = false;
		stageBox.addChild(screenVideo);
		placeholder = Ui.label(who("remote.waiting"), 15, 0xFFFFFF, false, 400, TextFormatAlign.CENTER);
		placeholder.x = 40;
		placeholder.y = 160;
		stageBox.addChild(placeholder);
		// problems in a banner across the top of the video, where the eye is
		banner = new Sprite();
		notice = Ui.label("", 13, 0xFFFFFF, true, 464);
		notice.x = 8;
		notice.y = 6;
		banner.addChild(notice);
		banner.visible = false;
		stageBox.addChild(banner);
		var remoteLabel = Ui.label(who("remote.label"), 12, 0xFFFFFF, true);
		remoteLabel.x = 8;
		remoteLabel.y = 336;
		stageBox.addChild(remoteLabel);
		// whose screen this is, across the top while it is shown
		screenBanner = new Sprite();
		var screenText = Ui.label(who("screen.label"), 13, 0xFFFFFF, true, VIDEO_W - 16, TextFormatAlign.CENTER);
		screenText.x = 8;
		screenText.y = 5;
		screenBanner.graphics.beginFill(0x000000, 0.75);
		screenBanner.graphics.drawRect(0, 0, VIDEO_W, screenText.height + 10);
		screenBanner.graphics.endFill();
		screenBanner.addChild(screenText);
		screenBanner.visible = false;
		stageBox.addChild(screenBanner);

		// self view in the corner of the stage, shown while the camera is on
		selfView = new Sprite();
		selfView.graphics.lineStyle(2, 0xFFFFFF);
		selfView.graphics.beginFill(0x000000);
		selfView.graphics.drawRect(0, 0, 160, 120);
		selfView.graphics.endFill();
		selfVideo = new Video(160, 120);
		selfView.addChild(selfVideo);
		var selfLabel = Ui.label(t("self_label"), 11, 0xFFFFFF, true);
		selfLabel.x = 4;
		selfLabel.y = 102;
		selfView.addChild(selfLabel);
		selfView.x = 16 + 480 - 168;
		selfView.y = 52 + 360 - 128;
		selfView.visible = false;
		addChild(selfView);

		cameraButton = new Button(t("camera.turn_on"), 150, 34, Ui.primary, toggleCamera);
		cameraButton.x = 16;
		cameraButton.y = 424;
		addChild(cameraButton);
		micButton = new Button(t("mic.turn_on"), 160, 34, Ui.primary, toggleMic);
		micButton.x = 176;
		micButton.y = 424;
		addChild(micButton);
		leaveButton = new Button(t("leave"), 150, 34, Ui.DANGER, leaveOrRejoin);
		leaveButton.x = 346;
		leaveButton.y = 424;
		addChild(leaveButton);

		privacy = Ui.label(t("privacy.off"), 13, Ui.TEXT, false, 480);
		privacy.x = 16;
		privacy.y = 466;
		addChild(privacy);
		presence = Ui.label("", 13, Ui.MUTED, false, 480);
		presence.x = 16;
		presence.y = 506;
		addChild(presence);

		// chat
		var x0 = 512;
		var colW = W - 16 - x0;
		var chatTitle = Ui.label(t("chat.title"), 15, Ui.TEXT, true);
		chatTitle.x = x0;
		chatTitle.y = 50;
		addChild(chatTitle);
		chatLog = Ui.area(colW, 190);
		chatLog.x = x0;
		chatLog.y = 76;
		addChild(chatLog);
		chatEmpty = Ui.label(t("chat.empty"), 13, Ui.MUTED);
		chatEmpty.x = x0 + 6;
		chatEmpty.y = 82;
		addChild(chatEmpty);
		chatInput = Ui.input(colW - 80, 28, MAX_CHAT);
		chatInput.x = x0;
		chatInput.y = 274;
		chatInput.addEventListener(KeyboardEvent.KEY_DOWN, function(e:KeyboardEvent) if (e.keyCode == 13) sendChat());
		addChild(chatInput);
		sendButton = new Button(t("chat.send"), 72, 28, Ui.primary, sendChat);
		sendButton.x = W - 16 - 72;
		sendButton.y = 274;
		addChild(sendButton);

		// documents and forms, opened in the browser
		var docsTitle = Ui.label(t("docs.title"), 15, Ui.TEXT, true);
		docsTitle.x = x0;
		docsTitle.y = 312;
		addChild(docsTitle);
		// upload: the limits stated before choosing a file (issue 10)
		uploadButton = new Button(t("upload.button"), colW, 28, Ui.primary, chooseFile);
		uploadButton.x = x0;
		uploadButton.y = 338;
		addChild(uploadButton);
		uploadLimits = Ui.label(t("upload.limits", {mb: Logic.megabytes(maxUpload)}), 12, Ui.MUTED, false, colW);
		uploadLimits.x = x0;
		uploadLimits.y = 368;
		addChild(uploadLimits);
		var docsBox = new Sprite();
		Ui.box(docsBox.graphics, colW, 110, Ui.PANEL, Ui.LINE);
		docsBox.x = x0;
		docsBox.y = 388;
		addChild(docsBox);
		docsEmpty = Ui.label(t("docs.empty"), 13, Ui.MUTED);
		docsEmpty.x = 6;
		docsEmpty.y = 6;
		docsBox.addChild(docsEmpty);
		docs = new Sprite();
		docs.x = 6;
		docs.y = 3;
		docsBox.addChild(docs);
		// progress, errors and hints of the list, in words
		docsLine = Ui.label("", 12, Ui.TEXT, false, colW);
		docsLine.x = x0;
		docsLine.y = 502;
		addChild(docsLine);

		enableMedia(false);
		var tick = new Timer(500);
		tick.addEventListener(TimerEvent.TIMER, function(_) {
			updateRemote();
			watchDevices();
			keepLinksFresh();
		});
		tick.start();
	}

	/** The short state in the title bar (a problem in the banner stays until solved). **/
	function setStatus(text:String):Void {
		status.text = text;
		status.x = W - 16 - status.width;
		report("status", text);
	}

	/** A failure: "not connected" in the title bar and the reason in the banner. **/
	function fail(text:String):Void {
		setStatus(t("status.offline"));
		showNotice(text);
	}

	function showNotice(text:String):Void {
		notice.text = text;
		banner.visible = text != "";
		if (text != "") {
			banner.graphics.clear();
			banner.graphics.beginFill(Ui.DANGER, 0.92);
			banner.graphics.drawRect(0, 0, VIDEO_W, notice.height + 12);
			banner.graphics.endFill();
			report("error", text);
		}
	}

	function enableMedia(on:Bool):Void {
		cameraButton.enabled = on;
		micButton.enabled = on;
		sendButton.enabled = on;
		uploadButton.enabled = on;
		chatInput.type = on ? flash.text.TextFieldType.INPUT : flash.text.TextFieldType.DYNAMIC;
	}

	// -- connection: RTMP first, then RTMPT(S) on the web port, as FMS clients do --------------

	function connect():Void {
		attempt = 0;
		tryNext();
	}

	function tryNext():Void {
		stopTimer();
		dropConnection();
		if (attempt >= attempts.length) {
			fail(t("status.failed"));
			scheduleReconnect();
			return;
		}
		var next = attempts[attempt];
		attempt++;
		setStatus(t(attempt == 1 ? "status.connecting" : "status.connecting_http"));
		report("connect", next.url.split("/").slice(0, 3).join("/") + " " + next.timeoutMs + "ms");
		try openConnection(next) catch (e:Dynamic) {
			report("error", "connect: " + Std.string(e));
			tryNext();
		}
	}

	function openConnection(next:Attempt):Void {
		nc = new NetConnection();
		nc.objectEncoding = 3; // AMF3, as every AS3 client
		// Native TLS first on the RTMPS port; the web-port fallback is RTMPT over HTTPS.
		if (next.nativeTls)
			nc.proxyType = "best";
		nc.client = rtmpClient();
		nc.addEventListener(NetStatusEvent.NET_STATUS, onConnectionStatus);
		nc.addEventListener(SecurityErrorEvent.SECURITY_ERROR, function(_) if (!connected) tryNext());
		nc.addEventListener(IOErrorEvent.IO_ERROR, function(_) {});
		nc.addEventListener(AsyncErrorEvent.ASYNC_ERROR, function(_) {});
		// tunnels through a proxy get 20 s, native RTMP 6 s (Logic.connectTimeout)
		connectTimer = new Timer(next.timeoutMs, 1);
		connectTimer.addEventListener(TimerEvent.TIMER_COMPLETE, function(_) if (!connected) tryNext());
		connectTimer.start();
		nc.connect(next.url, token);
	}

	function stopTimer():Void {
		if (connectTimer != null) {
			connectTimer.stop();
			connectTimer = null;
		}
	}

	function dropConnection():Void {
		if (nc == null)
			return;
		var old = nc;
		nc = null;
		old.removeEventListener(NetStatusEvent.NET_STATUS, onConnectionStatus);
		try {
			old.close();
		} catch (e:Dynamic) {}
	}

	function scheduleReconnect():Void {
		var again = new Timer(RECONNECT_MS, 1);
		again.addEventListener(TimerEvent.TIMER_COMPLETE, function(_) if (!connected && !left && !ended && !rejected && !displaced) connect());
		again.start();
	}

	function rtmpClient():Dynamic {
		var client:Dynamic = {};
		client.onChat = function(from:Dynamic, text:Dynamic, ts:Dynamic) addChat(Std.string(from), Std.string(text), ts);
		client.onSessionEvent = function(event:Dynamic) onSessionEvent(event);
		client.onBWDone = function() {};
		client.onBWCheck = function() return 0;
		return client;
	}

	function onConnectionStatus(e:NetStatusEvent):Void {
		var code:String = e.info.code;
		report("net", code);
		switch (code) {
			case "NetConnection.Connect.Success":
				stopTimer();
				connected = true;
				redirects = 0;
				rejected = false;
				setStatus(t("status.connected"));
				showNotice("");
				enableMedia(true);
				play();
				playScreen();
				listDocuments();
				republish();
				mediaChanged();
			case "NetConnection.Connect.Rejected":
				stopTimer();
				var ex:Dynamic = e.info.ex;
				var target = ex == null ? null : Logic.redirectTarget(ex.code, ex.redirect, redirects);
				if (target != null) {
					// the consultation lives on another node of the cluster: go there
					redirects++;
					report("redirect", target.split("/").slice(0, 3).join("/"));
					attempts = Logic.attempts([target]);
					attempt = 0;
					tryNext();
					return;
				}
				rejected = true;
				fail(t("status.rejected"));
			case "NetConnection.Connect.Failed":
				if (!connected && !rejected)
					tryNext();
			// Flash spells it "IdleTimeout" (NetStatusEvent.info.code reference)
			case "NetConnection.Connect.Closed", "NetConnection.Connect.AppShutdown", "NetConnection.Connect.IdleTimeout":
				var was = connected;
				connected = false;
				closeStreams();
				enableMedia(false);
				if (ended || left || rejected || displaced)
					return;
				if (was) {
					fail(t("status.reconnecting"));
					scheduleReconnect();
				} else {
					tryNext();
				}
			default:
		}
	}

	function play():Void {
		playStream = new NetStream(nc);
		playStream.bufferTime = 0.1; // live: show frames as they come
		playStream.client = {onMetaData: function(_) {}, onPlayStatus: function(_) {}};
		playStream.addEventListener(NetStatusEvent.NET_STATUS, function(e:NetStatusEvent) {
			var code:String = e.info.code;
			report("play", code);
			if (code == "NetStream.Play.UnpublishNotify") {
				remoteLive = false;
				remoteVideo.clear();
			} else if (code == "NetStream.Play.PublishNotify" || code == "NetStream.Play.Start") {
				remoteLive = true;
			}
			updateRemote();
		});
		playStream.addEventListener(AsyncErrorEvent.ASYNC_ERROR, function(_) {});
		remoteVideo.attachNetStream(playStream);
		playStream.play(playName);
	}

	/** The advisor's shared screen: played from the start, shown once frames come (the
		gateway answers NetStream.Play.PublishNotify when the advisor starts sharing). **/
	function playScreen():Void {
		if (screenName == "")
			return;
		screenStream = new NetStream(nc);
		screenStream.bufferTime = 0.1;
		screenStream.client = {onMetaData: function(_) {}, onPlayStatus: function(_) {}};
		screenStream.addEventListener(NetStatusEvent.NET_STATUS, function(e:NetStatusEvent) {
			var code:String = e.info.code;
			report("screen", code);
			if (code == "NetStream.Play.UnpublishNotify") {
				screenLive = false;
				screenVideo.clear();
			} else if (code == "NetStream.Play.PublishNotify" || code == "NetStream.Play.Start") {
				screenLive = true;
			}
			updateRemote();
		});
		screenStream.addEventListener(AsyncErrorEvent.ASYNC_ERROR, function(_) {});
		screenVideo.attachNetStream(screenStream);
		screenStream.play(screenName);
	}

	function updateRemote():Void {
		var sharing = connected && screenLive && screenVideo.videoWidth > 0;
		if (sharing) {
			var s = Logic.fit(screenVideo.videoWidth, screenVideo.videoHeight, VIDEO_W, VIDEO_H);
			if (screenVideo.x != s[0] || screenVideo.y != s[1] || screenVideo.width != s[2] || screenVideo.height != s[3]) {
				screenVideo.x = s[0];
				screenVideo.y = s[1];
				screenVideo.width = s[2];
				screenVideo.height = s[3];
			}
		}
		if (screenVideo.visible != sharing) {
			screenVideo.visible = sharing;
			screenBanner.visible = sharing;
			report("screen", sharing ? "shown" : "hidden");
		}
		// the screen instead of the camera (the advisor's voice goes on)
		var showing = !sharing && connected && remoteLive && advisorCamera && remoteVideo.videoWidth > 0;
		if (showing) {
			// the advisor's picture in its own aspect ratio (16:9 from a browser), letterboxed
			var r = Logic.fit(remoteVideo.videoWidth, remoteVideo.videoHeight, VIDEO_W, VIDEO_H);
			if (remoteVideo.x != r[0] || remoteVideo.y != r[1] || remoteVideo.width != r[2] || remoteVideo.height != r[3]) {
				remoteVideo.x = r[0];
				remoteVideo.y = r[1];
				remoteVideo.width = r[2];
				remoteVideo.height = r[3];
			}
		}
		remoteVideo.visible = showing;
		placeholder.visible = !showing && !sharing;
		var key = if (connected) (advisorCamera ? "remote.waiting" : "remote.camera_off") else if (banner.visible
			|| left || ended) "remote.offline" else "remote.connecting";
		var text = who(key);
		if (placeholder.text != text)
			placeholder.text = text;
	}

	// -- camera and microphone: the customer decides, Flash Player permits -----------------

	function toggleCamera():Void {
		if (!connected)
			return;
		if (cameraGate.state == On) {
			actCamera(cameraGate.switchOff());
		} else {
			if (camera == null) {
				camera = Media.camera();
				if (camera == null) {
					showNotice(t("camera.missing"));
					return;
				}
				camera.addEventListener(StatusEvent.STATUS, onDeviceStatus);
			}
			actCamera(cameraGate.switchOn(camera.muted));
		}
		mediaChanged();
	}

	function toggleMic():Void {
		if (!connected)
			return;
		if (micGate.state == On) {
			actMic(micGate.switchOff());
		} else {
			if (mic == null) {
				mic = Media.microphone();
				if (mic == null) {
					showNotice(t("mic.missing"));
					return;
				}
				mic.addEventListener(StatusEvent.STATUS, onDeviceStatus);
			}
			actMic(micGate.switchOn(mic.muted));
		}
		mediaChanged();
	}

	function actCamera(action:DeviceAction):Void {
		switch (action) {
			case Attach:
				selfVideo.attachCamera(camera);
				if (connected)
					ensurePublishing().attachCamera(camera);
				cameraOnSince = flash.Lib.getTimer();
				noFramesTold = false;
				if (notice.text == t("camera.allow"))
					showNotice("");
			case Detach, Denied:
				if (publishStream != null)
					publishStream.attachCamera(null);
				selfVideo.attachCamera(null);
				selfVideo.clear();
				if (action == Denied)
					showNotice(t("camera.denied"));
			case AskPermission:
				askPermission(t("camera.allow"));
			case Stay:
		}
	}

	function actMic(action:DeviceAction):Void {
		switch (action) {
			case Attach:
				if (connected)
					ensurePublishing().attachAudio(mic);
				if (notice.text == t("mic.allow"))
					showNotice("");
			case Detach, Denied:
				if (publishStream != null)
					publishStream.attachAudio(null);
				if (action == Denied)
					showNotice(t("mic.denied"));
			case AskPermission:
				askPermission(t("mic.allow"));
			case Stay:
		}
	}

	/** The device is muted: say what to do and open Flash Player's privacy panel (the
		only way back after "Deny + Remember"; Adobe: Security.showSettings). **/
	function askPermission(text:String):Void {
		showNotice(text);
		try
			Security.showSettings(SecurityPanel.PRIVACY)
		catch (e:Dynamic) {}
	}

	/** The privacy panel's answer: "Camera.Unmuted"/"Microphone.Unmuted" or "…Muted". **/
	function onDeviceStatus(e:StatusEvent):Void {
		report("device", e.code);
		switch (e.code) {
			case "Camera.Unmuted":
				actCamera(cameraGate.unmuted());
			case "Camera.Muted":
				actCamera(cameraGate.muted());
			case "Microphone.Unmuted":
				actMic(micGate.unmuted());
			case "Microphone.Muted":
				actMic(micGate.muted());
			default:
				return;
		}
		mediaChanged();
	}

	/** Every half second: a permission given in the panel without a status event, a
		device blocked meanwhile, a camera that delivers no frames. **/
	function watchDevices():Void {
		var changed = false;
		if (camera != null && cameraGate.state != Off) {
			var before = cameraGate.state;
			actCamera(camera.muted ? cameraGate.muted() : cameraGate.unmuted());
			changed = cameraGate.state != before;
			if (cameraGate.state == On && !noFramesTold
				&& Logic.cameraSilent(cameraOnSince, flash.Lib.getTimer(), camera.currentFPS)) {
				noFramesTold = true;
				showNotice(t("camera.no_frames"));
			}
		}
		if (mic != null && micGate.state != Off) {
			var before = micGate.state;
			actMic(mic.muted ? micGate.muted() : micGate.unmuted());
			changed = changed || micGate.state != before;
		}
		if (changed)
			mediaChanged();
	}

	function ensurePublishing():NetStream {
		if (publishStream == null) {
			publishStream = new NetStream(nc);
			publishStream.addEventListener(NetStatusEvent.NET_STATUS, onPublishStatus);
			publishStream.addEventListener(AsyncErrorEvent.ASYNC_ERROR, function(_) {});
			report("codec", Media.useH264(publishStream) ? "h264" : "spark");
			publishStream.publish(publishName, "live");
		}
		return publishStream;
	}

	/** A newer connection of this participant (another tab, or the browser page) took
		over the stream: told once (`reason: "replaced"`), this one stands down instead
		of reconnecting and taking it back, and offers to continue here. **/
	function onPublishStatus(e:NetStatusEvent):Void {
		var code:String = e.info.code;
		report("publish", code);
		// Only the current stream counts: after our own reconnect the new connection
		// replaces our stale one, whose stream hears "replaced" too.
		if (e.target != publishStream)
			return;
		if (code == "NetStream.Publish.BadName" && e.info.reason == "replaced") {
			displaced = true;
			actCamera(cameraGate.switchOff());
			actMic(micGate.switchOff());
			mediaChanged();
			showNotice(t("status.replaced"));
			setStatus(t("status.offline"));
			leaveButton.setStyle(t("rejoin_here"), Ui.primary);
		}
	}

	/** After a reconnect: publish again what was on, unless it was denied meanwhile. **/
	function republish():Void {
		publishStream = null;
		if (camera != null)
			actCamera(cameraGate.reconnected(camera.muted));
		if (mic != null)
			actMic(micGate.reconnected(mic.muted));
	}

	function mediaChanged():Void {
		var cameraOn = cameraGate.announced();
		var micOn = micGate.announced();
		if (!cameraOn && !micOn && publishStream != null) {
			// nothing on: stop publishing altogether, nothing leaves the computer
			publishStream.close();
			publishStream = null;
		}
		selfView.visible = cameraOn;
		cameraButton.setStyle(t(cameraOn ? "camera.turn_off" : "camera.turn_on"), cameraOn ? Ui.ON : Ui.primary);
		micButton.setStyle(t(micOn ? "mic.turn_off" : "mic.turn_on"), micOn ? Ui.ON : Ui.primary);
		privacy.text = t(cameraOn ? (micOn ? "privacy.both" : "privacy.camera") : (micOn ? "privacy.mic" : "privacy.off"));
		announceMedia();
	}

	/** `media(camera, microphone)`: only what Flash Player really gives (never a muted
		device, never before the privacy panel is answered). **/
	function announceMedia():Void {
		if (connected)
			nc.call("media", null, cameraGate.announced(), micGate.announced());
	}

	function closeStreams():Void {
		if (publishStream != null) {
			try
				publishStream.close()
			catch (e:Dynamic) {}
			publishStream = null;
		}
		if (playStream != null) {
			try
				playStream.close()
			catch (e:Dynamic) {}
			playStream = null;
		}
		if (screenStream != null) {
			try
				screenStream.close()
			catch (e:Dynamic) {}
			screenStream = null;
		}
		screenLive = false;
		remoteVideo.clear();
		screenVideo.clear();
	}

	function leaveOrRejoin():Void {
		if (ended)
			return;
		if (left || displaced) {
			left = false;
			displaced = false;
			showNotice("");
			leaveButton.setStyle(t("leave"), Ui.DANGER);
			connect();
			return;
		}
		left = true;
		actCamera(cameraGate.switchOff());
		actMic(micGate.switchOff());
		mediaChanged();
		stopTimer();
		closeStreams();
		connected = false;
		dropConnection();
		enableMedia(false);
		selfView.visible = false;
		showNotice("");
		setStatus(t("status.left"));
		leaveButton.setStyle(t("rejoin"), Ui.primary);
	}

	// -- chat and session events ----------------------------------------------------------------

	function sendChat():Void {
		var text = StringTools.trim(chatInput.text);
		if (!connected || text == "")
			return;
		nc.call("chat", new flash.net.Responder(function(_) {}, function(_) {
			showNotice(t("chat.rejected"));
		}), text);
		chatInput.text = "";
		addChat(null, text, Date.now().getTime() / 1000);
	}

	function addChat(from:String, text:String, ts:Dynamic):Void {
		var who = from == null ? t("chat.me") : (from == "advisor" ? t("chat.advisor") : t("chat.customer"));
		var seconds:Float = Std.parseFloat(Std.string(ts));
		var date = Math.isNaN(seconds) ? Date.now() : Date.fromTime(seconds * 1000);
		var time = StringTools.lpad(Std.string(date.getHours()), "0", 2) + ":" + StringTools.lpad(Std.string(date.getMinutes()), "0", 2);
		chatEmpty.visible = false;
		// appendText, not htmlText: chat text is never interpreted as markup
		chatLog.appendText((chatLog.length > 0 ? "\n" : "") + who + " (" + time + "): " + text);
		chatLog.scrollV = chatLog.maxScrollV;
	}

	function onSessionEvent(event:Dynamic):Void {
		if (event == null)
			return;
		var type = Std.string(event.type);
		report("event", type);
		switch (type) {
			case "participant":
				if (Std.string(event.role) == playName)
					presence.text = who(event.present == true ? "advisor.present" : "advisor.absent");
			case "media":
				if (Std.string(event.role) == playName) {
					advisorCamera = event.camera == true;
					var key = event.camera == true ? (event.microphone == true ? "advisor.media.both" : "advisor.media.camera") : (event.microphone == true ? "advisor.media.mic" : "advisor.media.none");
					presence.text = who(key);
					updateRemote();
				}
			case "document":
				showLink("document", event.id, Std.string(event.name), event.url);
			case "form":
				var title:Dynamic = lang == "en" && event.title_en != null ? event.title_en : event.title;
				var name = title != null ? Std.string(title) : Std.string(event.name);
				var key = event.state == "submitted" ? "docs.form_done" : "docs.form";
				showLink("form", event.id, t(key, {name: name}), event.url);
			case "notice":
				// e.g. a receiver refused for capacity (gateway/monitor.py)
				showNotice(t(Logic.noticeKey(Std.string(event.code), Std.string(event.kind))));
			case "session_ended":
				ended = true;
				actCamera(cameraGate.switchOff());
				actMic(micGate.switchOff());
				mediaChanged();
				setStatus(t("status.ended"));
				enableMedia(false);
				leaveButton.enabled = false;
			default:
		}
	}

	/** Only our own origin's http(s) URLs (or paths) are opened: a URL from the wire is
		never allowed to become `javascript:` or a foreign site. **/
	function safeUrl(raw:Dynamic):String {
		if (raw == null)
			return null;
		var url = Std.string(raw);
		if (StringTools.startsWith(url, "/") && !StringTools.startsWith(url, "//"))
			return base + url;
		if (base != "" && StringTools.startsWith(url, base + "/"))
			return url;
		return null;
	}

	/** The consultation's documents and forms as the server lists them on (re)connect:
		`documents()` / `forms()` answer with the same events, each with a URL of its own. **/
	function listDocuments():Void {
		for (command in ["documents", "forms"])
			nc.call(command, new flash.net.Responder(function(list:Dynamic) {
				if (Std.isOfType(list, Array))
					for (event in (list : Array<Dynamic>))
						onSessionEvent(event);
			}, function(_) {}));
	}

	/** A document or form in the list (once per id; a later event updates its entry). **/
	function showLink(kind:String, rawId:Dynamic, text:String, rawUrl:Dynamic):Void {
		if (rawId == null)
			return;
		var id = kind + ":" + Std.string(rawId);
		var label = text.length > 38 ? text.substr(0, 37) + "…" : text;
		var link = links.get(id);
		if (link == null) {
			link = new DocLink(kind, Std.string(rawId));
			link.button = new Button(label, 258, 20, Ui.primary, function() openLink(link), true);
			// renew an old URL before it is needed: pointer over it, or keyboard focus
			link.button.addEventListener(flash.events.MouseEvent.ROLL_OVER, function(_) refreshIfStale(link));
			link.button.addEventListener(FocusEvent.FOCUS_IN, function(_) refreshIfStale(link));
			links.set(id, link);
			order.push(link);
			docs.addChild(link.button);
			if (order.length > MAX_DOCS)
				docs.removeChild(order.shift().button);
			for (i in 0...order.length)
				order[i].button.y = i * 21;
			docsEmpty.visible = false;
		} else {
			link.button.setStyle(label, Ui.primary);
		}
		link.ticket.set(safeUrl(rawUrl), flash.Lib.getTimer());
	}

	/** Opens the link's one-time URL in a new browser window. Only here, in the click or
		key handler: pop-up blockers let `navigateToURL(_blank)` through only inside a
		user event, so a Responder never opens anything. Without a fresh URL at hand the
		person is asked to click again once the next one has come. **/
	function openLink(link:DocLink):Void {
		var url = link.ticket.take(flash.Lib.getTimer());
		if (url != null) {
			Lib.getURL(new URLRequest(url), "_blank");
			docsLine.text = "";
		} else {
			docsLine.text = t("docs.preparing");
		}
		refreshLink(link);
	}

	function refreshIfStale(link:DocLink):Void {
		if (link.ticket.stale(flash.Lib.getTimer()))
			refreshLink(link);
	}

	/** Every half second: no URL in the list older than a minute (tickets last two), so
		a click or Enter finds a fresh one, whatever the pointer did before. **/
	function keepLinksFresh():Void {
		if (!connected)
			return;
		for (link in order)
			if (!link.pending)
				refreshIfStale(link);
	}

	function refreshLink(link:DocLink):Void {
		if (!connected || link.pending)
			return;
		link.pending = true;
		var command = link.kind == "form" ? "formUrl" : "documentUrl";
		nc.call(command, new Responder(function(url:Dynamic) {
			link.pending = false;
			link.ticket.set(safeUrl(url), flash.Lib.getTimer());
			if (docsLine.text == t("docs.preparing"))
				docsLine.text = "";
		}, function(_) link.pending = false), link.id);
	}

	// -- upload: FileReference with a one-time ticket (Flash cannot send a token) --------------

	/** The click handler: `browse()` works only inside a user event. **/
	function chooseFile():Void {
		if (!connected)
			return;
		fileRef = new FileReference();
		fileRef.addEventListener(Event.SELECT, function(_) startUpload());
		fileRef.addEventListener(ProgressEvent.PROGRESS, function(e:ProgressEvent) {
			var percent = e.bytesTotal > 0 ? Math.floor(100 * e.bytesLoaded / e.bytesTotal) : 0;
			docsLine.text = t("upload.progress", {percent: percent});
		});
		fileRef.addEventListener(HTTPStatusEvent.HTTP_STATUS, function(e:HTTPStatusEvent) uploadStatus = e.status);
		fileRef.addEventListener(DataEvent.UPLOAD_COMPLETE_DATA, function(_) uploadDone());
		fileRef.addEventListener(IOErrorEvent.IO_ERROR, function(_) uploadFailed(uploadStatus));
		fileRef.addEventListener(SecurityErrorEvent.SECURITY_ERROR, function(_) uploadFailed(0));
		try
			fileRef.browse([new FileFilter(t("upload.filter"), Logic.UPLOAD_TYPES)])
		catch (e:Dynamic)
			uploadFailed(0);
	}

	/** A file was chosen: the size checked here first (in words, before any byte is
		sent), then a fresh upload URL asked for and the upload started. **/
	function startUpload():Void {
		uploadStatus = 0;
		if (fileRef.size > maxUpload) {
			uploadFailed(413);
			return;
		}
		docsLine.text = t("upload.preparing");
		nc.call("uploadUrl", new Responder(function(answer:Dynamic) {
			var url = answer == null ? null : safeUrl(answer.url);
			if (answer != null && answer.max_bytes != null)
				setUploadLimit(answer.max_bytes);
			if (url == null || fileRef.size > maxUpload) {
				uploadFailed(url == null ? 0 : 413);
				return;
			}
			var request = new URLRequest(url);
			request.method = URLRequestMethod.POST;
			// multipart/form-data with the file in "Filedata" (Flash's default field name)
			fileRef.upload(request, "Filedata");
		}, function(_) uploadFailed(0)));
	}

	function setUploadLimit(bytes:Dynamic):Void {
		var n = Std.parseFloat(Std.string(bytes));
		if (n > 0) {
			maxUpload = n;
			uploadLimits.text = t("upload.limits", {mb: Logic.megabytes(maxUpload)});
		}
	}

	function uploadDone():Void {
		docsLine.text = t("upload.done", {name: fileRef.name});
		report("upload", "done");
	}

	function uploadFailed(status:Int):Void {
		var text = t(Logic.uploadErrorKey(status), {mb: Logic.megabytes(maxUpload)});
		docsLine.text = text;
		report("upload", "error " + status);
	}
}

/** One entry of the documents list: its kind and id, and its one-time URL. **/
class DocLink {
	public var kind:String;
	public var id:String;
	public var button:Button;
	public var ticket = new DocTicket();

	/** a documentUrl/formUrl call is on its way **/
	public var pending = false;

	public function new(kind:String, id:String) {
		this.kind = kind;
		this.id = id;
	}
}
