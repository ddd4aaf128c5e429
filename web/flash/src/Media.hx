import flash.media.Camera;
import flash.media.Microphone;
import flash.media.SoundCodec;
import flash.net.NetStream;
import flash.system.ApplicationDomain;

/**
	Camera and microphone set-up within the terms of use: at most 0.5 Mbit/s upstream.

	Video 640x480 at 15 fps limited to 50 000 bytes/s (400 kbit/s, quality 0 = the
	bandwidth decides), a keyframe every 15 frames (about one a second: the gateway cannot
	ask Flash for one, docs/architecture.md "Media routing"). Audio Speex (always 16 kHz
	wide-band, encodeQuality 6 = 20.6 kbit/s) or, where Speex cannot be set, Nellymoser
	at 22 kHz.
**/
class Media {
	public static inline var WIDTH = 640;
	public static inline var HEIGHT = 480;
	public static inline var FPS = 15;
	public static inline var VIDEO_BYTES_PER_SECOND = 50000;
	public static inline var KEYFRAME_INTERVAL = 15;

	/** The camera Flash Player offers, but on Macs the "USB Video Class Video" one
		rather than "DV Video"/"IIDC FireWire Video" (a black picture; Logic.preferredCamera). **/
	public static function camera():Camera {
		var names:Array<String> = [for (n in Camera.names) Std.string(n)];
		var index = Logic.preferredCamera(names);
		var cam = index >= 0 ? Camera.getCamera(Std.string(index)) : Camera.getCamera();
		if (cam == null)
			return null;
		cam.setMode(WIDTH, HEIGHT, FPS);
		cam.setQuality(VIDEO_BYTES_PER_SECOND, 0);
		cam.setKeyFrameInterval(KEYFRAME_INTERVAL);
		return cam;
	}

	/** H.264 (constrained baseline, level 3.1) where Flash Player has it (11.0+), else the
		stream stays with the camera's default codec, Sorenson Spark. **/
	public static function useH264(stream:NetStream):Bool {
		if (!ApplicationDomain.currentDomain.hasDefinition("flash.media.H264VideoStreamSettings"))
			return false;
		try {
			H264.apply(stream);
			return true;
		} catch (e:Dynamic) {
			return false;
		}
	}

	/** The echo-cancelling "enhanced" microphone where available (10.3+), Speex 16 kHz. **/
	public static function microphone():Microphone {
		var mic:Microphone = null;
		try {
			mic = Microphone.getEnhancedMicrophone();
		} catch (e:Dynamic) {
			mic = null;
		}
		if (mic == null)
			mic = Microphone.getMicrophone();
		if (mic == null)
			return null;
		try {
			mic.codec = SoundCodec.SPEEX;
			mic.encodeQuality = 6;
			mic.framesPerPacket = 2;
		} catch (e:Dynamic) {}
		if (mic.codec != SoundCodec.SPEEX) {
			mic.codec = SoundCodec.NELLYMOSER;
			mic.rate = 22;
		}
		mic.setSilenceLevel(0);
		try {
			mic.setUseEchoSuppression(true);
		} catch (e:Dynamic) {}
		echoCancellation(mic);
		return mic;
	}

	/** The enhanced microphone's acoustic echo canceller (Flash Player 10.3+): full duplex
		where microphone and speakers are apart, half duplex for USB microphones (often a
		webcam's, next to loud speakers), as Adobe advises and defaults; 128 ms echo path
		(Adobe's default, enough for a desk), non-linear processing on, no automatic gain
		(the customer's own level). A plain microphone has no such options: ignored. **/
	static function echoCancellation(mic:Microphone):Void {
		try {
			var options = new flash.media.MicrophoneEnhancedOptions();
			options.mode = Logic.echoMode(mic.name) == "halfDuplex" ? flash.media.MicrophoneEnhancedMode.HALF_DUPLEX : flash.media.MicrophoneEnhancedMode.FULL_DUPLEX;
			options.echoPath = 128;
			options.nonLinearProcessing = true;
			options.autoGain = false;
			mic.enhancedOptions = options;
		} catch (e:Dynamic) {}
	}
}

/** Kept apart so that players without the class never verify code that names it. **/
class H264 {
	public static function apply(stream:NetStream):Void {
		var s = new flash.media.H264VideoStreamSettings();
		s.setProfileLevel(flash.media.H264Profile.BASELINE, flash.media.H264Level.LEVEL_3_1);
		s.setMode(Media.WIDTH, Media.HEIGHT, Media.FPS);
		s.setQuality(Media.VIDEO_BYTES_PER_SECOND, 0);
		s.setKeyFrameInterval(Media.KEYFRAME_INTERVAL);
		stream.videoStreamSettings = s;
	}
}
