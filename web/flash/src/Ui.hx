import flash.display.Sprite;
import flash.events.MouseEvent;
import flash.text.TextField;
import flash.text.TextFieldAutoSize;
import flash.text.TextFieldType;
import flash.text.TextFormat;
import flash.text.TextFormatAlign;

/**
	Plain UI pieces drawn with the display list: no embedded fonts or images (the device
	font `_sans` has every German glyph), nothing loaded from anywhere.
**/
class Ui {
	public static inline var FONT = "_sans";
	public static inline var TEXT = 0x1B1F24;
	public static inline var MUTED = 0x5B6570;
	public static inline var PRIMARY = 0x0B5CAD;
	/** The bank's colour (FlashVar `color`, rrggbb; the gateway checked its contrast with white). **/
	public static var primary:Int = PRIMARY;

	/** `rrggbb` from the FlashVars, or `fallback` when it is not six hex digits. **/
	public static function parseColor(text:String, fallback:Int):Int {
		if (text == null || !~/^[0-9a-fA-F]{6}$/.match(text))
			return fallback;
		return Std.parseInt("0x" + text);
	}
	public static inline var DANGER = 0xB3261E;
	public static inline var ON = 0x1E7B34;
	public static inline var PANEL = 0xFFFFFF;
	public static inline var LINE = 0xC9D1D9;
	public static inline var STAGE_DARK = 0x1F2933;

	public static function format(size:Int, color:Int, bold = false, ?align:TextFormatAlign):TextFormat {
		var f = new TextFormat(FONT, size, color, bold);
		if (align != null)
			f.align = align;
		return f;
	}

	/** A read-only text; `width` > 0 wraps it at that width. **/
	public static function label(text:String, size = 13, color = TEXT, bold = false, width = 0.0, ?align:TextFormatAlign):TextField {
		var t = new TextField();
		t.defaultTextFormat = format(size, color, bold, align);
		t.selectable = false;
		t.mouseEnabled = false;
		if (width > 0) {
			t.width = width;
			t.multiline = true;
			t.wordWrap = true;
		}
		t.autoSize = align == TextFormatAlign.RIGHT ? TextFieldAutoSize.RIGHT : (align == TextFormatAlign.CENTER ? TextFieldAutoSize.CENTER : TextFieldAutoSize.LEFT);
		t.text = text;
		return t;
	}

	public static function input(width:Float, height:Float, maxChars:Int):TextField {
		var t = new TextField();
		t.type = TextFieldType.INPUT;
		t.defaultTextFormat = format(13, TEXT);
		t.border = true;
		t.borderColor = LINE;
		t.background = true;
		t.backgroundColor = PANEL;
		t.width = width;
		t.height = height;
		t.maxChars = maxChars;
		return t;
	}

	/** A scrolling, read-only, selectable text area (the chat log). **/
	public static function area(width:Float, height:Float):TextField {
		var t = new TextField();
		t.defaultTextFormat = format(13, TEXT);
		t.multiline = true;
		t.wordWrap = true;
		t.border = true;
		t.borderColor = LINE;
		t.background = true;
		t.backgroundColor = PANEL;
		t.width = width;
		t.height = height;
		return t;
	}

	public static function box(g:flash.display.Graphics, w:Float, h:Float, fill:Int, ?line:Int):Void {
		g.clear();
		if (line != null)
			g.lineStyle(1, line);
		g.beginFill(fill);
		g.drawRoundRect(0, 0, w, h, 8, 8);
		g.endFill();
	}
}

/** A flat button with a text label; `onClick` runs on a mouse click or Enter/Space. **/
class Button extends Sprite {
	public var enabled(default, set):Bool = true;

	var caption:TextField;
	var w:Float;
	var h:Float;
	var fill:Int;
	var textColor:Int;
	var outlined:Bool;
	var onClick:Void->Void;

	public function new(text:String, w:Float, h:Float, fill:Int, onClick:Void->Void, outlined = false) {
		super();
		this.w = w;
		this.h = h;
		this.onClick = onClick;
		this.outlined = outlined;
		caption = Ui.label("", 13, 0xFFFFFF, true, 0, TextFormatAlign.CENTER);
		addChild(caption);
		buttonMode = true;
		useHandCursor = true;
		mouseChildren = false;
		tabEnabled = true;
		setStyle(text, fill);
		addEventListener(MouseEvent.CLICK, function(_) if (enabled) this.onClick());
		addEventListener(flash.events.KeyboardEvent.KEY_DOWN, function(e:flash.events.KeyboardEvent) {
			if (enabled && (e.keyCode == 13 || e.keyCode == 32))
				this.onClick();
		});
	}

	public function setStyle(text:String, fill:Int):Void {
		this.fill = fill;
		textColor = outlined ? fill : 0xFFFFFF;
		caption.setTextFormat(Ui.format(13, textColor, true, TextFormatAlign.CENTER));
		caption.defaultTextFormat = Ui.format(13, textColor, true, TextFormatAlign.CENTER);
		caption.text = text;
		accessibilityProperties = new flash.accessibility.AccessibilityProperties();
		accessibilityProperties.name = text;
		redraw();
	}

	public var text(get, never):String;

	function get_text():String
		return caption.text;

	function set_enabled(v:Bool):Bool {
		enabled = v;
		alpha = v ? 1.0 : 0.45;
		buttonMode = v;
		return v;
	}

	function redraw():Void {
		if (outlined)
			Ui.box(graphics, w, h, 0xFFFFFF, fill);
		else
			Ui.box(graphics, w, h, fill);
		caption.x = (w - caption.width) / 2;
		caption.y = (h - caption.height) / 2;
	}
}
