import haxe.macro.Expr;

/**
	The SWF's strings, taken at compile time from the same language tables as the HTML
	pages (`web/static/i18n/{de,en}.json`, keys starting with `swf.`), so every
	user-visible string lives in one place per language. Only the `swf.` keys go into the
	SWF, and only they count towards its source hash (`web/swf.py`).
**/
class Strings {
	public static macro function table(lang:String):Expr {
		var dir = haxe.macro.Context.definedValue("i18n_dir");
		if (dir == null)
			dir = "../static/i18n";
		var path = dir + "/" + lang + ".json";
		haxe.macro.Context.registerModuleDependency("Strings", path);
		var data:haxe.DynamicAccess<String> = haxe.Json.parse(sys.io.File.getContent(path));
		var keys = [for (k in data.keys()) if (StringTools.startsWith(k, "swf.")) k];
		keys.sort(Reflect.compare);
		if (keys.length == 0)
			haxe.macro.Context.error(path + " has no swf.* strings", haxe.macro.Context.currentPos());
		var entries = [for (k in keys) macro $v{k.substr(4)} => $v{data.get(k)}];
		return macro $a{entries};
	}
}
