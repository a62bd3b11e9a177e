/*
 * DeadlineCloudSubmitter_stmpo.jsx - submit an After Effects comp to AWS Deadline Cloud,
 * rendered on each worker by `stmpo render` (N parallel aerender processes per task).
 *
 * Run it from File > Scripts > Run Script File..., or copy it into the "ScriptUI Panels"
 * folder to get a dockable panel (Window > DeadlineCloudSubmitter_stmpo.jsx).
 *
 * What it does:
 *   1. you pick a comp (the active comp or a render-queue item), the frames, the output
 *      folder and file name ([#####] in the name = image sequence, none = a movie), and
 *      the stmpo settings;
 *   2. it writes a Deadline Cloud job bundle folder: a copy of the matching stmpo template
 *      (openjd_bundle/template.yaml for image sequences, openjd_bundle/movie/template.yaml
 *      for movies), parameter_values.json, asset_references.json and, when asked, a fonts/
 *      folder with the fonts the comp's text layers use;
 *   3. Submit runs `deadline bundle submit --yes <folder>` (the Deadline Cloud CLI, set up
 *      with `deadline config gui`); "Write bundle only" leaves the folder for you.
 *
 * It installs nothing: the Deadline Cloud CLI must already be on this machine.
 *
 * Everything between the "<pure>" markers below is plain ECMAScript 3 with no After
 * Effects objects in it, so tests run it outside After Effects (tests/test_jsx.py). The
 * table STMPO_PARAMETERS is the ONLY place that names job parameters: every value the
 * submitter writes comes from it, and the bundle gets only the parameters its template
 * defines (the submitter also re-reads the copied template and drops anything else).
 */

// <pure>
// ---- the one table: UI field -> job parameter ------------------------------------------
// kinds: the bundles whose template defines the parameter ("image" = openjd_bundle/
// template.yaml, chunked tasks of at most 150 frames; "big" = openjd_bundle/big/
// template.yaml, tasks of any size; "movie" = openjd_bundle/movie/template.yaml). type INT is written as a
// number, everything else as a string. An empty value or DEFAULT is not written at all, so
// the worker's STMPO_* environment, the profile or stmpo's default applies.
var STMPO_PARAMETERS = [
    // field              parameter            kinds            type
    {field: "projectFile",     param: "ProjectFile",     kinds: "image big movie", type: "PATH"},
    {field: "renderBy",        param: "RenderBy",        kinds: "image big movie", type: "STRING"},
    {field: "comp",            param: "Comp",            kinds: "image big movie", type: "STRING"},
    {field: "outputDir",       param: "OutputDir",       kinds: "image big movie", type: "PATH"},
    {field: "outputFileName",  param: "OutputFileName",  kinds: "image big movie", type: "STRING"},
    {field: "frames",          param: "Frames",          kinds: "image big movie", type: "STRING"},
    {field: "framesPerTask",   param: "FramesPerTask",   kinds: "image",       type: "INT"},
    {field: "targetRuntime",   param: "TargetRuntimeSeconds", kinds: "image",  type: "INT"},
    {field: "taskCount",       param: "TaskCount",       kinds: "big",         type: "INT"},
    {field: "profile",         param: "Profile",         kinds: "image big movie", type: "STRING"},
    {field: "concurrency",     param: "Concurrency",     kinds: "image big",   type: "STRING"},
    {field: "maxConcurrency",  param: "MaxConcurrency",  kinds: "image big",   type: "STRING"},
    {field: "ramPerProcessGB", param: "RamPerProcessGB", kinds: "image big",   type: "STRING"},
    {field: "threadsPerSlot",  param: "ThreadsPerSlot",  kinds: "image big",   type: "STRING"},
    {field: "affinity",        param: "Affinity",        kinds: "image big",   type: "STRING"},
    {field: "numaMap",         param: "NumaMap",         kinds: "image big",   type: "PATH"},
    {field: "mfr",             param: "Mfr",             kinds: "image big movie", type: "STRING"},
    {field: "mfrMaxCpu",       param: "MfrMaxCpu",       kinds: "image big movie", type: "STRING"},
    {field: "schedule",        param: "Schedule",        kinds: "image big",   type: "STRING"},
    {field: "chunkSize",       param: "ChunkSize",       kinds: "image big",   type: "STRING"},
    {field: "spawnDelay",      param: "SpawnDelay",      kinds: "image big",   type: "STRING"},
    {field: "failFast",        param: "FailFast",        kinds: "image big",   type: "STRING"},
    {field: "skipExisting",    param: "SkipExisting",    kinds: "image big",   type: "STRING"},
    {field: "aerenderPath",    param: "AerenderPath",    kinds: "image big movie", type: "STRING"},
    {field: "brokerUrl",       param: "BrokerUrl",       kinds: "image big movie", type: "STRING"},
    {field: "fontsDir",        param: "FontsDir",        kinds: "image big movie", type: "PATH"},
    {field: "omTemplate",      param: "OMTemplate",      kinds: "image big movie", type: "STRING"},
    {field: "rsTemplate",      param: "RSTemplate",      kinds: "image big movie", type: "STRING"},
    {field: "ignoreMissingEffects", param: "IgnoreMissingEffects", kinds: "image big movie", type: "STRING"},
    {field: "condaPackages",   param: "CondaPackages",   kinds: "image big movie", type: "STRING"},
    {field: "condaChannels",   param: "CondaChannels",   kinds: "image big movie", type: "STRING"}
];
// ---- end of the table -------------------------------------------------------------------

var STMPO_TEMPLATES = {image: "template.yaml", big: "big/template.yaml", movie: "movie/template.yaml"};
var STMPO_CHUNK_LIMIT = 150; // CHUNK[INT]: Deadline Cloud's most frames per chunked task
var STMPO_MAX_FRAMES = 1000000; // as stmpo render: more frames in one job is a typo
var STMPO_REQUIRED = ["projectFile", "renderBy", "comp", "outputDir", "outputFileName", "frames"];
var STMPO_FONT_EXTENSIONS = ["ttf", "otf", "ttc", "otc", "pfb", "pfm", "afm", "dfont", "fon", "fnt"];

function stmpoTrim(s) {
    return String(s).replace(/^\s+/, "").replace(/\s+$/, "");
}

function stmpoInList(list, value) {
    for (var i = 0; i < list.length; i++) {
        if (list[i] === value) { return true; }
    }
    return false;
}

function stmpoHex4(code) {
    var h = code.toString(16);
    while (h.length < 4) { h = "0" + h; }
    return h;
}

// A JSON string literal. Every character outside printable ASCII is written as \uXXXX, so
// the file is plain ASCII and any path (commas, quotes, backslashes, accents, CJK, emoji as
// surrogate pairs) reaches Deadline unchanged whatever encoding the file is read with.
function stmpoJsonString(s) {
    s = String(s);
    var out = "\"";
    for (var i = 0; i < s.length; i++) {
        var c = s.charAt(i);
        var code = s.charCodeAt(i);
        if (c === "\"") { out += "\\\""; }
        else if (c === "\\") { out += "\\\\"; }
        else if (c === "\n") { out += "\\n"; }
        else if (c === "\r") { out += "\\r"; }
        else if (c === "\t") { out += "\\t"; }
        else if (c === "\b") { out += "\\b"; }
        else if (c === "\f") { out += "\\f"; }
        else if (code < 0x20 || code > 0x7e) { out += "\\u" + stmpoHex4(code); }
        else { out += c; }
    }
    return out + "\"";
}

function stmpoIsArray(v) {
    return Object.prototype.toString.call(v) === "[object Array]";
}

// JSON text of strings, finite numbers, booleans, null, arrays and plain objects (keys in
// insertion order), indented by two spaces.
function stmpoToJson(value, level) {
    level = level || 0;
    var pad = "", inner = "  ", i, parts = [];
    for (i = 0; i < level; i++) { pad += "  "; }
    inner = pad + "  ";
    if (value === null || value === undefined) { return "null"; }
    if (typeof value === "string") { return stmpoJsonString(value); }
    if (typeof value === "number") {
        if (!isFinite(value)) { throw new Error("cannot write " + value + " as JSON"); }
        return String(value);
    }
    if (typeof value === "boolean") { return value ? "true" : "false"; }
    if (stmpoIsArray(value)) {
        if (value.length === 0) { return "[]"; }
        for (i = 0; i < value.length; i++) { parts.push(inner + stmpoToJson(value[i], level + 1)); }
        return "[\n" + parts.join(",\n") + "\n" + pad + "]";
    }
    for (var key in value) {
        if (value.hasOwnProperty(key)) {
            parts.push(inner + stmpoJsonString(key) + ": " + stmpoToJson(value[key], level + 1));
        }
    }
    if (parts.length === 0) { return "{}"; }
    return "{\n" + parts.join(",\n") + "\n" + pad + "}";
}

// The bundle kind of an output file name, by stmpo's own rule: a [#...] frame token in the
// file name means an image sequence; no token means a movie (rendered by one process).
function stmpoKindFor(fileName) {
    var base = String(fileName).replace(/^.*[\/\\]/, "");
    return /\[#+\]/.test(base) ? "image" : "movie";
}

function stmpoTemplateFor(kind) {
    if (kind !== "image" && kind !== "movie" && kind !== "big") { throw new Error("unknown bundle kind " + kind); }
    return STMPO_TEMPLATES[kind];
}

// The bundle for an output and a task size: a movie; chunked tasks up to 150 frames
// ("image"); above that the big-task template ("big"), as stmpo bundle chooses.
// Returns {kind, taskCount, why}.
function stmpoChooseBundle(outputKind, framesPerTask, frameCount) {
    var fpt = parseInt(String(framesPerTask), 10);
    if (outputKind !== "image" || !(fpt > STMPO_CHUNK_LIMIT)) {
        return {kind: outputKind, taskCount: 0, why: ""};
    }
    var count = Math.max(1, Math.ceil(frameCount / fpt));
    return {kind: "big", taskCount: count,
        why: "Frames per task " + fpt + " is above the " + STMPO_CHUNK_LIMIT + " frames a chunked task may carry: "
            + "big-task template, " + count + " task(s) of about " + Math.ceil(frameCount / count) + " frames"};
}

// What an output module's Format says: "image" (a sequence: every still format of After
// Effects ends in "Sequence") or "movie" (After Effects' own one-file formats and the
// containers and codecs of plug-ins); an unknown format goes by the file name's [#####]
// token, like stmpo (deadline/_project.py has the same rule).
var STMPO_MOVIE_FORMAT = /quicktime|avi|h\.26[45]|hevc|mpeg|mp4|mxf|dnx|prores|gif|webm|aiff|wav|mp3/;
function stmpoKindForFormat(format, fileName) {
    var f = stmpoTrim(format).toLowerCase();
    if (/sequence$/.test(f)) { return "image"; }
    if (STMPO_MOVIE_FORMAT.test(f)) { return "movie"; }
    return stmpoKindFor(fileName);
}

// The checks stmpo bundle makes on a render-queue item, as messages (empty = fine).
// item: {index, status: "QUEUED"|..., outputs: [{format, file, useCompFrameNumber}]};
// kind: the bundle the output name asks for.
function stmpoCheckQueueItem(item, kind) {
    var errors = [], label = "render-queue item " + item.index;
    if (item.status !== "QUEUED") {
        errors.push(label + " is " + item.status + ", not queued: tick Render for it in the render queue");
    }
    if (item.outputs.length !== 1) {
        errors.push(label + " has " + item.outputs.length + " output modules: stmpo renders exactly one");
        return errors;
    }
    var om = item.outputs[0];
    var omKind = stmpoKindForFormat(om.format, om.file);
    if (kind !== "movie" && omKind === "movie") {
        errors.push(label + " writes " + om.format + " (a movie), which cannot be split across tasks and slots: "
            + "set an image-sequence output module, or name a movie file");
    }
    if (kind === "movie" && omKind === "image") {
        errors.push(label + " writes " + om.format + " (an image sequence) but the file name is a movie: "
            + "the output module decides the format");
    }
    if (kind !== "movie" && om.useCompFrameNumber === false) {
        errors.push(label + ": switch on 'Use comp frame number' (stmpo checks frames by number)");
    }
    return errors;
}

// Footage to attach: files, and folders for image sequences; missing ones named.
// list: [{path, sequence, exists}]. Returns {files, dirs, missing}.
function stmpoFootageToAttach(list) {
    var out = {files: [], dirs: [], missing: []};
    for (var i = 0; i < list.length; i++) {
        var f = list[i];
        if (!f.exists) { out.missing.push(f.path); continue; }
        var target = f.sequence ? out.dirs : out.files;
        if (!stmpoInList(target, f.path)) { target.push(f.path); }
    }
    return out;
}

function stmpoKindsOf(row) {
    return row.kinds.split(" ");
}

// The parameters a template defines, read from its text like stmpo bundle does without a
// YAML library: the "- name:" items of the top-level parameterDefinitions list.
function stmpoTemplateParamNames(text) {
    var lines = String(text).split(/\r?\n/);
    var names = [], inside = false, indent = null, m;
    for (var i = 0; i < lines.length; i++) {
        var line = lines[i];
        if (/^\s*$/.test(line) || /^\s*#/.test(line)) { continue; }
        if (!/^[\s\-]/.test(line)) {
            inside = /^parameterDefinitions:\s*$/.test(line);
            continue;
        }
        if (!inside) { continue; }
        m = /^(\s*)- name:\s*["']?([A-Za-z_][A-Za-z0-9_]*)["']?\s*$/.exec(line);
        if (m && (indent === null || m[1] === indent)) {
            indent = m[1];
            names.push(m[2]);
        }
    }
    return names;
}

function stmpoIsUnset(value) {
    if (value === undefined || value === null) { return true; }
    var s = stmpoTrim(value);
    return s === "" || s === "DEFAULT";
}

// The parameter values of a bundle of `kind` from the UI's settings (field -> text).
// `defined` (optional) is the list of parameters the copied template really defines.
// Returns {values: [{name, value}], dropped: [text], errors: [text]}: settings the bundle
// has no parameter for are dropped, never written.
function stmpoParameterValues(settings, kind, defined) {
    var result = {values: [], dropped: [], errors: []};
    for (var i = 0; i < STMPO_PARAMETERS.length; i++) {
        var row = STMPO_PARAMETERS[i];
        var value = settings[row.field];
        if (stmpoIsUnset(value)) { continue; }
        if (!stmpoInList(stmpoKindsOf(row), kind)) {
            result.dropped.push(row.param + " (the " + kind + " bundle has no such parameter)");
            continue;
        }
        if (defined && !stmpoInList(defined, row.param)) {
            result.dropped.push(row.param + " (the template in use does not define it)");
            continue;
        }
        // a comp's name is matched by aerender as it is, spaces at its ends included
        value = row.field === "comp" ? String(value) : stmpoTrim(value);
        if (row.type === "INT") {
            if (!/^\d+$/.test(value)) {
                result.errors.push(row.param + " must be a whole number, not '" + value + "'");
                continue;
            }
            value = parseInt(value, 10);
        }
        result.values.push({name: row.param, value: value});
    }
    return result;
}

function stmpoParameterValuesDocument(values) {
    return {parameterValues: values};
}

function stmpoAssetReferences(inputFiles, inputDirs, outputDirs) {
    return {assetReferences: {
        inputs: {filenames: inputFiles, directories: inputDirs},
        outputs: {directories: outputDirs},
        referencedPaths: []
    }};
}

// ---- frames --------------------------------------------------------------------------------
// Comp time (seconds from the comp's start) to frame numbers as After Effects shows them.
function stmpoFramesFromTimes(start, duration, frameDuration, displayStartFrame) {
    var first = Math.round(start / frameDuration) + (displayStartFrame || 0);
    var count = Math.max(1, Math.round(duration / frameDuration));
    return {first: first, last: first + count - 1};
}

// A typed frame spec, an OpenJD range expression, cleaned: "1-240", "1-10, 50-60", "7",
// "-5--1", "1-240:5" (every 5th frame). Returns {ok, spec, error, count, ranges: [[a, b,
// step], ...]}.
function stmpoParseFrameSpec(text) {
    var s = String(text).replace(/\s+/g, "");
    var result = {ok: false, spec: s, error: "", ranges: [], count: 0};
    if (s === "") { result.error = "no frames: type e.g. 1-240"; return result; }
    var parts = s.split(",");
    for (var i = 0; i < parts.length; i++) {
        var m = /^(-?\d+)(?:-(-?\d+)(?::(-?\d+))?)?$/.exec(parts[i]);
        if (!m) { result.error = "'" + parts[i] + "' is not a frame or range (e.g. 1-240 or 1-240:5)"; return result; }
        var a = parseInt(m[1], 10);
        var b = (m[2] === undefined || m[2] === "") ? a : parseInt(m[2], 10);
        var step = (m[3] === undefined || m[3] === "") ? 1 : parseInt(m[3], 10);
        if (step === 0) { result.error = "range " + parts[i] + " has a step of 0"; return result; }
        if (b < a && step > 0) { result.error = "range " + parts[i] + " ends before it starts"; return result; }
        if (b > a && step < 0) { result.error = "range " + parts[i] + " counts down but ends above its start"; return result; }
        var n = Math.floor(Math.abs(b - a) / Math.abs(step)) + 1;
        var lo = step > 0 ? a : a - (n - 1) * Math.abs(step);  // the frames listed, ascending
        result.ranges.push([lo, lo + (n - 1) * Math.abs(step), Math.abs(step)]);
        result.count += n;
        if (result.count > STMPO_MAX_FRAMES) {
            result.error = s + " names more than " + STMPO_MAX_FRAMES + " frames: split it";
            return result;
        }
    }
    // OpenJD refuses a frame listed twice (Deadline would refuse the job): say which
    var seen = {};
    for (i = 0; i < result.ranges.length; i++) {
        for (var f = result.ranges[i][0]; f <= result.ranges[i][1]; f += result.ranges[i][2]) {
            if (seen[f]) { result.error = "frame " + f + " is listed twice in " + s + ": list each frame once"; return result; }
            seen[f] = true;
        }
    }
    result.ok = true;
    return result;
}

function stmpoRangeText(a, b) {
    return a === b ? String(a) : a + "-" + b;
}

// The Frames value: mode "workarea", "comp", "rq" use {first, last}; "custom" the typed text.
// A movie needs one contiguous range.
function stmpoFrameSpec(mode, range, typed, kind) {
    var parsed;
    if (mode === "custom") {
        parsed = stmpoParseFrameSpec(typed);
    } else if (range && range.last >= range.first) {
        parsed = stmpoParseFrameSpec(stmpoRangeText(range.first, range.last));
    } else {
        return {ok: false, spec: "", error: "the comp has no frames in that range", ranges: []};
    }
    if (parsed.ok && kind === "movie") {
        var sorted = parsed.ranges.slice(0).sort(function (x, y) { return x[0] - y[0]; });
        for (var i = 0; i < sorted.length; i++) {
            if (sorted[i][2] > 1 && sorted[i][1] > sorted[i][0]) {
                parsed.ok = false;
                parsed.error = "a movie is one contiguous range of frames: " + parsed.spec + " has a step";
                return parsed;
            }
        }
        for (i = 1; i < sorted.length; i++) {
            if (sorted[i][0] > sorted[i - 1][1] + 1) {
                parsed.ok = false;
                parsed.error = "a movie is one contiguous range of frames: " + parsed.spec + " has gaps";
                return parsed;
            }
        }
        var lo = sorted[0][0], hi = sorted[0][1];
        for (i = 1; i < sorted.length; i++) { if (sorted[i][1] > hi) { hi = sorted[i][1]; } }
        parsed.spec = stmpoRangeText(lo, hi);
    }
    return parsed;
}

// ---- checks ------------------------------------------------------------------------------
function stmpoCheckNumber(errors, label, value, min, max, whole) {
    if (stmpoIsUnset(value)) { return; }
    var s = stmpoTrim(value);
    var ok = whole ? /^\d+$/.test(s) : /^\d+(\.\d+)?$/.test(s);
    var n = parseFloat(s);
    if (!ok || n < min || (max !== null && n > max)) {
        errors.push(label + " must be " + (whole ? "a whole number" : "a number") + " from " + min
            + (max !== null ? " to " + max : " up") + ", not '" + s + "'");
    }
}

// Everything the UI can get wrong, as messages (empty = fine).
function stmpoValidate(settings, kind) {
    var errors = [];
    for (var i = 0; i < STMPO_REQUIRED.length; i++) {
        if (stmpoIsUnset(settings[STMPO_REQUIRED[i]])) { errors.push(STMPO_REQUIRED[i] + " is empty"); }
    }
    var name = String(settings.outputFileName || "");
    if (kind !== "movie" && stmpoKindFor(name) !== "image") {
        errors.push("an image sequence needs a [#####] frame token in the file name");
    }
    if (/[\r\n]/.test(name) || /[\r\n]/.test(String(settings.outputDir || ""))) {
        errors.push("the output folder and file name must be one line each");
    }
    stmpoCheckNumber(errors, "Frames per task", settings.framesPerTask, 1,
        kind === "image" ? STMPO_CHUNK_LIMIT : null, true);
    stmpoCheckNumber(errors, "Target task runtime (s)", settings.targetRuntime, 0, 86400, true);
    stmpoCheckNumber(errors, "Concurrency", settings.concurrency, 0, null, true);
    stmpoCheckNumber(errors, "Max concurrency", settings.maxConcurrency, 1, null, true);
    stmpoCheckNumber(errors, "RAM per process (GB)", settings.ramPerProcessGB, 0.1, null, false);
    stmpoCheckNumber(errors, "Threads per slot", settings.threadsPerSlot, 1, null, true);
    stmpoCheckNumber(errors, "MFR max CPU %", settings.mfrMaxCpu, 1, 100, true);
    stmpoCheckNumber(errors, "Spawn delay (s)", settings.spawnDelay, 0, null, false);
    if (!stmpoIsUnset(settings.chunkSize)) {
        var cs = stmpoTrim(settings.chunkSize).toLowerCase();
        if (cs !== "auto" && !/^[1-9]\d*$/.test(cs)) {
            errors.push("Chunk size must be auto or a number of frames, not '" + cs + "'");
        }
    }
    if (!stmpoIsUnset(settings.brokerUrl) && !/^(redis|rediss|redis\+socket):\/\//.test(stmpoTrim(settings.brokerUrl))) {
        errors.push("Broker URL must start with redis://, rediss:// or redis+socket://");
    }
    return errors;
}

// ---- paths and commands --------------------------------------------------------------------
function stmpoSplitPath(path) {
    var s = String(path);
    var cut = Math.max(s.lastIndexOf("/"), s.lastIndexOf("\\"));
    if (cut < 0) { return {dir: "", name: s}; }
    return {dir: cut === 0 ? s.charAt(0) : s.substring(0, cut), name: s.substring(cut + 1)};
}

function stmpoJoinPath(dir, name, windows) {
    var sep = windows ? "\\" : "/";
    var d = String(dir);
    if (d.length && (d.charAt(d.length - 1) === "/" || d.charAt(d.length - 1) === "\\")) {
        return d + name;
    }
    return d + sep + name;
}

// A folder name made of ASCII letters, digits, "-" and "_" (the bundle folder's own name is
// safe on every command line; the job name keeps the full text).
function stmpoSafeName(text) {
    var s = String(text).replace(/[^A-Za-z0-9_\-]+/g, "_").replace(/^_+/, "").replace(/_+$/, "");
    if (s.length > 60) { s = s.substring(0, 60); }
    return s || "job";
}

function stmpoFileExtension(path) {
    var name = stmpoSplitPath(path).name;
    var dot = name.lastIndexOf(".");
    return dot < 0 ? "" : name.substring(dot + 1).toLowerCase();
}

function stmpoIsFontFile(path) {
    return stmpoInList(STMPO_FONT_EXTENSIONS, stmpoFileExtension(path));
}

// Fonts the operating system itself ships (macOS /System/Library, read-only): on every Mac
// worker already, and not ours to deploy to a Windows one (named as not attached). Windows'
// Fonts folder is NOT one of them: "install for all users" puts fonts there too, and a
// worker may lack them, so those are attached.
function stmpoIsSystemFont(path) {
    var p = String(path).replace(/\\/g, "/").toLowerCase();
    return p.indexOf("/system/library/") === 0;
}

// Font files to attach: unique, existing font files that are not OS fonts. A font After
// Effects substitutes (missing on this machine) is named, never attached.
// fonts: [{name, path, substitute}] -> {attach: [path], skipped: [text]}
function stmpoFontsToAttach(fonts) {
    var attach = [], seen = [], skipped = [];
    for (var i = 0; i < fonts.length; i++) {
        var f = fonts[i];
        if (f.substitute) { skipped.push(f.name + " is missing on this machine: After Effects renders a substitute"); continue; }
        if (!f.path) { skipped.push(f.name + " (After Effects does not say where its file is)"); continue; }
        if (!stmpoIsFontFile(f.path)) { skipped.push(f.name + " (" + f.path + " is not a font file)"); continue; }
        if (stmpoIsSystemFont(f.path)) {  // on every Mac, on no Windows worker
            skipped.push(f.name + " is a macOS system font (" + f.path + "): not attached, so a Windows worker renders a substitute");
            continue;
        }
        var key = String(f.path).replace(/\\/g, "/").toLowerCase();  // two families may share a file name
        if (stmpoInList(seen, key)) { continue; }
        seen.push(key);
        attach.push(f.path);
    }
    return {attach: attach, skipped: skipped};
}

// Whether a footage file that is not a still (FileSource.isStill false) is one frame of
// an image sequence: anything but a movie or sound container (camera raw and 3D render
// passes included), so its whole folder is attached.
var STMPO_CLIP_EXTENSIONS = ["mov", "mp4", "m4v", "avi", "mxf", "mpg", "mpeg", "m2v", "m2ts", "mts",
    "wmv", "webm", "mkv", "flv", "3gp", "r3d", "braw", "ari", "crm", "gif", "swf",
    "wav", "aif", "aiff", "mp3", "m4a", "aac", "ogg", "flac"];
function stmpoIsSequenceFile(name, isStill) {
    return !isStill && !stmpoInList(STMPO_CLIP_EXTENSIONS, stmpoFileExtension(name));
}

// The snapshot copy's name, beside the project ("shot.aep" -> "shot.stmpo-<stamp>.aep").
function stmpoSnapshotName(name, stamp) {
    var s = String(name), dot = s.lastIndexOf(".");
    return dot > 0 ? s.substring(0, dot) + ".stmpo-" + stamp + s.substring(dot)
        : s + ".stmpo-" + stamp + ".aep";
}

// The names the attached font files get in the bundle's one fonts/ folder: their own,
// and a number before it where two files of different folders share a name.
function stmpoFontCopyNames(paths) {
    var names = [], taken = [];
    for (var i = 0; i < paths.length; i++) {
        var name = stmpoSplitPath(paths[i]).name, candidate = name, n = 2;
        while (stmpoInList(taken, candidate.toLowerCase())) { candidate = n + "_" + name; n++; }
        taken.push(candidate.toLowerCase());
        names.push(candidate);
    }
    return names;
}

// aerender -comp NAME renders the first comp of that name: a name two comps share cannot
// be rendered by name (message; "" = fine). names: every comp name of the project.
function stmpoCompNameProblem(name, names) {
    var count = 0;
    for (var i = 0; i < names.length; i++) { if (names[i] === name) { count++; } }
    if (count > 1) {
        return count + " comps are named '" + name + "', and aerender -comp cannot tell them apart: "
            + "rename them, or render a render-queue item";
    }
    return "";
}

// The conda package of the After Effects the artist runs (app.version "25.1x3" ->
// "aftereffects=25"), for service-managed fleets: a project saved by a newer After
// Effects does not open in an older one. "" when the version cannot be read.
function stmpoCondaPackagesFor(version) {
    var m = /^(\d+)\./.exec(String(version));
    return m ? "aftereffects=" + m[1] : "";
}

// The template text with its job name replaced by `name` (the Job name field), so a GUI
// submission and a written bundle carry it too (a JSON string is a YAML scalar).
function stmpoTemplateWithName(text, name) {
    if (stmpoIsUnset(name)) { return text; }
    return String(text).replace(/^name:.*$/m, "name: " + stmpoToJson(String(name)));
}

// One argument quoted for the shell that runs it: POSIX sh (single quotes) or cmd.exe
// (double quotes; cmd cannot escape % or " inside quotes, so they are replaced).
function stmpoQuoteArg(arg, windows) {
    var s = String(arg);
    if (windows) { return "\"" + s.replace(/["%]/g, "_") + "\""; }
    return "'" + s.replace(/'/g, "'\\''") + "'";
}

// The command line that opens Deadline Cloud's own submitter window on the bundle
// (`deadline bundle gui-submit`), started in the background so After Effects is not
// frozen while attachments are hashed and uploaded.
function stmpoGuiSubmitCommand(deadline, bundleDir, windows, loginShell) {
    var q = function (a) { return stmpoQuoteArg(a, windows); };
    var cmd = q(deadline) + " bundle gui-submit " + q(bundleDir);
    if (windows) { return "cmd.exe /d /c \"start \"\" /b " + cmd + " <NUL >NUL 2>&1\""; }
    cmd = "(" + cmd + " </dev/null >/dev/null 2>&1 &)";
    return loginShell ? q(loginShell) + " -l -c " + q(cmd) : cmd;
}

// The command line system.callSystem runs to submit the bundle. On macOS a login shell
// (loginShell, e.g. /bin/zsh) gives `deadline` the user's PATH; output ends with a marker
// line when the submission succeeded. Its input is the null device: a question the CLI
// asks (files outside the storage profile, before deadline 0.51) gets "no" at once
// instead of holding After Effects. The job's name is in the bundle's template (a
// non-ASCII name may not survive the Windows command line).
function stmpoSubmitCommand(deadline, bundleDir, windows, loginShell) {
    var q = function (a) { return stmpoQuoteArg(a, windows); };
    var cmd = q(deadline) + " bundle submit --yes " + q(bundleDir);
    if (windows) {
        return "cmd.exe /d /c \"" + cmd + " <NUL 2>&1 && echo STMPO_SUBMIT_OK\"";
    }
    cmd = cmd + " </dev/null 2>&1 && echo STMPO_SUBMIT_OK";
    return loginShell ? q(loginShell) + " -l -c " + q(cmd) : cmd;
}
// The host requirements of the job (deadline/_bigtask.py: host_minimums): room for two
// slots of an image task (one for a movie), each of the threads and RAM the settings give
// (stmpo's defaults where empty: 16 threads with MFR, 8 without; 32 GB), as
// {vcpu, memory} (MiB). A profile named here is not read on this machine.
function stmpoHostMinimums(settings, kind) {
    var slots = kind === "movie" ? 1 : 2;
    var threads = kind === "movie" ? NaN : parseInt(settings.threadsPerSlot, 10);
    if (!(threads > 0)) { threads = stmpoTrim(settings.mfr || "") === "OFF" ? 8 : 16; }
    var ram = kind === "movie" ? NaN : parseFloat(settings.ramPerProcessGB);
    if (!(ram > 0)) { ram = 32; }
    return {vcpu: Math.max(1, threads * slots), memory: Math.max(1, Math.round(ram * 1024) * slots)};
}

// The template text with its "# stmpo: vcpu" and "# stmpo: memory" minimums set.
function stmpoWithHostMinimums(text, vcpu, memory) {
    return String(text)
        .replace(/^(\s*min:\s*)\d+(\s*# stmpo: vcpu\b.*)$/m, "$1" + vcpu + "$2")
        .replace(/^(\s*min:\s*)\d+(\s*# stmpo: memory\b.*)$/m, "$1" + memory + "$2");
}

// The command that says whether `deadline` runs here (prints its version), as
// stmpoSubmitCommand runs it.
function stmpoVersionCommand(deadline, windows, loginShell) {
    var q = function (a) { return stmpoQuoteArg(a, windows); };
    var cmd = q(deadline) + " --version";
    if (windows) { return "cmd.exe /d /c \"" + cmd + " <NUL 2>&1\""; }
    cmd = cmd + " </dev/null 2>&1";
    return loginShell ? q(loginShell) + " -l -c " + q(cmd) : cmd;
}
// </pure>

// ---- After Effects -----------------------------------------------------------------------
var STMPO_SECTION = "stmpo Deadline Cloud submitter";
var STMPO_IS_WINDOWS = (typeof $ !== "undefined") && $.os.toLowerCase().indexOf("windows") >= 0;

function stmpoGetSetting(key, fallback) {
    try {
        if (app.settings.haveSetting(STMPO_SECTION, key)) {
            return app.settings.getSetting(STMPO_SECTION, key);
        }
    } catch (e) { /* first run */ }
    return fallback;
}

function stmpoSaveSetting(key, value) {
    try { app.settings.saveSetting(STMPO_SECTION, key, String(value)); } catch (e) { /* ignore */ }
}

function stmpoReadText(path) {
    var f = new File(path);
    f.encoding = "UTF-8";
    if (!f.open("r")) { throw new Error("cannot read " + path + ": " + f.error); }
    var text = f.read();
    f.close();
    return text;
}

function stmpoWriteText(path, text) {
    var f = new File(path);
    f.encoding = "UTF-8";
    f.lineFeed = "Unix";
    if (!f.open("w")) { throw new Error("cannot write " + path + ": " + f.error); }
    var ok = f.write(text);
    f.close();
    if (!ok) { throw new Error("cannot write " + path + ": " + f.error); }
}

function stmpoCopyFile(src, dest) {
    var f = new File(src);
    if (!f.exists) { throw new Error("file not found: " + src); }
    if (!f.copy(dest)) { throw new Error("cannot copy " + src + " to " + dest + ": " + f.error); }
}

function stmpoDefaultTemplatesDir() {
    // the repository's (or an install's share/stmpo-celery/) openjd_bundle next to jsx/
    try {
        var here = new File($.fileName).parent;
        var candidate = new Folder(here.fsName + "/../openjd_bundle");
        if (candidate.exists) { return candidate.fsName; }
    } catch (e) { /* not from a file */ }
    return "";
}

function stmpoComps() {
    var out = [];
    for (var i = 1; i <= app.project.numItems; i++) {
        if (app.project.item(i) instanceof CompItem) { out.push(app.project.item(i)); }
    }
    return out;
}

// What can be rendered: the active comp, then each render-queue item.
function stmpoSources() {
    var out = [], active = app.project.activeItem;
    if (active && active instanceof CompItem) {
        out.push({label: "Active comp: " + active.name, comp: active, rqIndex: 0, rqItem: null});
    }
    for (var i = 1; i <= app.project.renderQueue.numItems; i++) {
        var rq = app.project.renderQueue.item(i);
        out.push({label: "Render queue " + i + ": " + rq.comp.name, comp: rq.comp, rqIndex: i, rqItem: rq});
    }
    return out;
}

function stmpoDisplayStartFrame(comp) {
    if (comp.displayStartFrame !== undefined) { return comp.displayStartFrame; }
    return Math.round(comp.displayStartTime / comp.frameDuration);
}

function stmpoSourceRange(source, mode) {
    var c = source.comp, d = stmpoDisplayStartFrame(c);
    if (mode === "workarea") { return stmpoFramesFromTimes(c.workAreaStart, c.workAreaDuration, c.frameDuration, d); }
    if (mode === "rq" && source.rqItem) {
        return stmpoFramesFromTimes(source.rqItem.timeSpanStart, source.rqItem.timeSpanDuration, c.frameDuration, d);
    }
    return stmpoFramesFromTimes(0, c.duration, c.frameDuration, d);
}

// The output folder and name an item's first output module writes to: the item's, or
// for a comp the first queued item that renders it (what aerender -comp renders), else a
// default.
function stmpoSourceOutput(source) {
    try {
        var rqItem = source.rqItem;
        if (!rqItem) {
            var idx = stmpoFirstQueuedFor(source.comp);
            if (idx) { rqItem = app.project.renderQueue.item(idx); }
        }
        if (rqItem && rqItem.numOutputModules > 0) {
            var file = rqItem.outputModule(1).file;
            if (file) { return stmpoSplitPath(file.fsName); }
        }
    } catch (e) { /* no output module file */ }
    return {dir: "", name: stmpoSafeName(source.comp.name) + "_[#####].png"};
}

function stmpoFontLocation(doc) {
    try { if (doc.fontLocation) { return doc.fontLocation; } } catch (e) { /* older AE */ }
    try {
        if (app.fonts && app.fonts.getFontsByPostScriptName) {
            var found = app.fonts.getFontsByPostScriptName(doc.font);
            if (found && found.length) { return found[0].location; }
        }
    } catch (e2) { /* AE before 24 */ }
    return "";
}

// Fonts the project uses: app.project.usedFonts (After Effects 24.5+: every text layer
// of the project, with missing fonts flagged as substitutes), else the text layers of
// `comp` and its nested comps.
function stmpoProjectFonts(comp) {
    try {
        var used = app.project.usedFonts, out = [];
        if (used !== undefined && used !== null) {
            for (var i = 0; i < used.length; i++) {
                var f = used[i].font;
                out.push({name: f.postScriptName, path: f.location || "", substitute: f.isSubstitute === true});
            }
            return out;
        }
    } catch (e) { /* before After Effects 24.5 */ }
    return stmpoCollectFonts(comp);
}

// Every footage file of the project, its proxies too: [{path, sequence, exists}] (a
// sequence is its folder).
function stmpoProjectFootage() {
    var out = [];
    function add(source, missing) {
        if (!(source instanceof FileSource) || !source.file) { return; }
        var file = source.file, seq = stmpoIsSequenceFile(file.name, source.isStill);
        out.push({path: seq ? file.parent.fsName : file.fsName, sequence: seq,
            exists: !missing && (seq ? file.parent.exists : file.exists)});
    }
    for (var i = 1; i <= app.project.numItems; i++) {
        var item = app.project.item(i);
        if (!(item instanceof FootageItem)) { continue; }
        add(item.mainSource, item.footageMissing);
        if (item.useProxy) { add(item.proxySource, false); }  // workers render with it
    }
    return out;
}

// The render-queue item aerender -comp renders: the comp's first queued one (0: none, and
// aerender adds one with the default output module).
function stmpoFirstQueuedFor(comp) {
    var rq = app.project.renderQueue;
    for (var i = 1; i <= rq.numItems; i++) {
        if (rq.item(i).comp.id === comp.id && rq.item(i).status === RQItemStatus.QUEUED) { return i; }
    }
    return 0;
}

// The render-queue item as stmpoCheckQueueItem reads it.
function stmpoQueueItemInfo(index) {
    var rq = app.project.renderQueue.item(index), outputs = [];
    var names = {};
    names[RQItemStatus.QUEUED] = "QUEUED"; names[RQItemStatus.UNQUEUED] = "UNQUEUED";
    names[RQItemStatus.NEEDS_OUTPUT] = "NEEDS_OUTPUT"; names[RQItemStatus.DONE] = "DONE";
    names[RQItemStatus.RENDERING] = "RENDERING"; names[RQItemStatus.USER_STOPPED] = "USER_STOPPED";
    names[RQItemStatus.ERR_STOPPED] = "ERR_STOPPED"; names[RQItemStatus.WILL_CONTINUE] = "WILL_CONTINUE";
    for (var j = 1; j <= rq.numOutputModules; j++) {
        var om = rq.outputModule(j), set = {};
        try { set = om.getSettings(GetSettingsFormat.STRING); } catch (e) { /* older AE */ }
        outputs.push({format: set["Format"] || "", file: om.file ? om.file.fsName : "",
            useCompFrameNumber: set["Use Comp Frame Number"] !== "false"});
    }
    return {index: index, status: names[rq.status] || String(rq.status), outputs: outputs};
}

// Fonts used by the text layers of `comp` and of every comp nested in it, keyframes too.
function stmpoCollectFonts(comp) {
    var fonts = [], visited = [];
    function addDoc(doc) {
        try { if (doc && doc.font) { fonts.push({name: doc.font, path: stmpoFontLocation(doc)}); } } catch (e) { /* not text */ }
    }
    function walk(c) {
        if (stmpoInList(visited, c.id)) { return; }
        visited.push(c.id);
        for (var i = 1; i <= c.numLayers; i++) {
            var layer = c.layer(i);
            if (layer instanceof TextLayer) {
                var prop = layer.property("ADBE Text Properties").property("ADBE Text Document");
                addDoc(prop.value);
                for (var k = 1; k <= prop.numKeys; k++) { addDoc(prop.keyValue(k)); }
            } else if (layer.source && layer.source instanceof CompItem) {
                walk(layer.source);
            }
        }
    }
    walk(comp);
    return fonts;
}

function stmpoBuildUI(thisObj) {
    var win = (thisObj instanceof Panel) ? thisObj
        : new Window("dialog", "Submit to Deadline Cloud (stmpo)", undefined, {resizeable: true});
    win.orientation = "column";
    win.alignChildren = ["fill", "top"];
    var ui = {};

    function row(parent, label) {
        var g = parent.add("group");
        g.orientation = "row";
        g.alignChildren = ["left", "center"];
        var st = g.add("statictext", undefined, label);
        st.preferredSize.width = 150;
        return g;
    }
    function edit(parent, label, key, fallback, width) {
        // key null: not remembered between runs
        var g = row(parent, label);
        var e = g.add("edittext", undefined, key ? stmpoGetSetting(key, fallback) : fallback);
        e.preferredSize.width = width || 300;
        if (key) { e.settingKey = key; }
        return e;
    }
    function drop(parent, label, key, items, fallback) {
        var g = row(parent, label);
        var d = g.add("dropdownlist", undefined, items);
        var wanted = stmpoGetSetting(key, fallback);
        d.selection = 0;
        for (var i = 0; i < items.length; i++) { if (items[i] === wanted) { d.selection = i; } }
        d.settingKey = key;
        return d;
    }
    function panel(title) {
        var p = win.add("panel", undefined, title);
        p.orientation = "column";
        p.alignChildren = ["fill", "top"];
        return p;
    }

    // -- what to render
    var pSrc = panel("Comp and frames");
    ui.sources = stmpoSources();
    var labels = [];
    for (var i = 0; i < ui.sources.length; i++) { labels.push(ui.sources[i].label); }
    ui.source = row(pSrc, "Render").add("dropdownlist", undefined, labels);
    ui.source.preferredSize.width = 300;
    if (labels.length) { ui.source.selection = 0; }
    var gf = row(pSrc, "Frames");
    ui.fWork = gf.add("radiobutton", undefined, "Work area");
    ui.fComp = gf.add("radiobutton", undefined, "Comp");
    ui.fRq = gf.add("radiobutton", undefined, "Render settings");
    ui.fCustom = gf.add("radiobutton", undefined, "Custom:");
    ui.framesText = gf.add("edittext", undefined, "");
    ui.framesText.preferredSize.width = 110;
    ui.fWork.value = true;

    // -- output
    var pOut = panel("Output (a [#####] token = image sequence, none = movie)");
    var go = row(pOut, "Output folder");
    ui.outputDir = go.add("edittext", undefined, "");
    ui.outputDir.preferredSize.width = 240;
    var browseOut = go.add("button", undefined, "...");
    ui.outputFileName = edit(pOut, "File name", null, "");
    ui.kindLabel = pOut.add("statictext", undefined, "");
    ui.framesPerTask = edit(pOut, "Frames per task", "framesPerTask", "100", 80);

    // -- stmpo settings
    var pSet = panel("stmpo settings on each worker (empty / DEFAULT = the worker decides)");
    ui.profile = edit(pSet, "Profile (hero, farm, .toml)", "profile", "", 200);
    ui.concurrency = edit(pSet, "Concurrency (0 = auto)", "concurrency", "", 80);
    ui.maxConcurrency = edit(pSet, "Max concurrency", "maxConcurrency", "", 80);
    ui.ramPerProcessGB = edit(pSet, "RAM per process (GB)", "ramPerProcessGB", "", 80);
    ui.threadsPerSlot = edit(pSet, "Threads per slot", "threadsPerSlot", "", 80);
    ui.mfr = drop(pSet, "Multi-Frame Rendering", "mfr", ["DEFAULT", "ON", "OFF"], "DEFAULT");
    ui.mfrMaxCpu = edit(pSet, "MFR max CPU %", "mfrMaxCpu", "", 80);
    ui.affinity = drop(pSet, "CPU affinity", "affinity", ["DEFAULT", "ON", "OFF"], "DEFAULT");
    ui.numaMap = edit(pSet, "NUMA map (optional)", "numaMap", "", 300);
    ui.schedule = drop(pSet, "Schedule", "schedule", ["DEFAULT", "adaptive", "guided", "static", "fixed"], "DEFAULT");
    ui.chunkSize = edit(pSet, "Chunk size (auto / N)", "chunkSize", "", 80);
    ui.spawnDelay = edit(pSet, "Spawn delay (s)", "spawnDelay", "", 80);
    ui.failFast = drop(pSet, "Fail fast", "failFast", ["DEFAULT", "ON", "OFF"], "DEFAULT");
    ui.skipExisting = drop(pSet, "Skip existing frames", "skipExisting", ["DEFAULT", "ON", "OFF"], "DEFAULT");
    ui.aerenderPath = edit(pSet, "aerender on workers", "aerenderPath", "", 300);
    ui.brokerUrl = edit(pSet, "Broker URL", "brokerUrl", "", 300);
    ui.attachFonts = pSet.add("checkbox", undefined, "Attach the fonts the comp's text layers use");
    ui.attachFonts.value = stmpoGetSetting("attachFonts", "true") === "true";
    ui.attachFootage = pSet.add("checkbox", undefined, "Attach every footage file of the project (job attachments)");
    ui.attachFootage.value = stmpoGetSetting("attachFootage", "true") === "true";
    ui.snapshot = pSet.add("checkbox", undefined, "Submit a snapshot copy of the project (later saves do not change the job)");
    ui.snapshot.value = stmpoGetSetting("snapshot", "false") === "true";
    ui.guiSubmit = pSet.add("checkbox", undefined, "Open Deadline's submitter window (After Effects stays usable)");
    ui.guiSubmit.value = stmpoGetSetting("guiSubmit", "true") === "true";

    // -- job and bundle
    var pJob = panel("Job");
    ui.jobName = edit(pJob, "Job name", null, "");
    ui.templatesDir = edit(pJob, "stmpo templates folder", "templatesDir", stmpoDefaultTemplatesDir());
    ui.bundleRoot = edit(pJob, "Write bundles into", "bundleRoot", Folder.myDocuments.fsName + (STMPO_IS_WINDOWS ? "\\" : "/") + "stmpo_bundles");
    ui.deadline = edit(pJob, "deadline command", "deadline", "deadline");

    var gb = win.add("group");
    gb.alignment = ["right", "top"];
    var bSubmit = gb.add("button", undefined, "Submit");
    var bWrite = gb.add("button", undefined, "Write bundle only");
    var bClose = gb.add("button", undefined, "Close");

    function currentSource() {
        return ui.source.selection ? ui.sources[ui.source.selection.index] : null;
    }
    // Read the comps and the render queue again (a docked panel outlives both): true when
    // the selection still names the same comp at the same place, else the list is new and
    // nothing is selected from it.
    function refreshSources() {
        var was = currentSource(), now = stmpoSources(), keep = -1;
        for (var i = 0; i < now.length && was; i++) {
            try {
                if (now[i].rqIndex === was.rqIndex && now[i].comp.id === was.comp.id) { keep = i; }
            } catch (e) { /* the comp was deleted */ }
        }
        ui.refreshing = true;
        try {
            ui.sources = now;
            ui.source.removeAll();
            for (i = 0; i < now.length; i++) { ui.source.add("item", now[i].label); }
            if (keep >= 0) { ui.source.selection = keep; }
        } finally { ui.refreshing = false; }
        return keep >= 0;
    }
    function updateKind() {
        var kind = stmpoKindFor(ui.outputFileName.text);
        ui.kindLabel.text = kind === "image"
            ? "Image sequence: tasks of at most 'Frames per task' frames (above 150: big tasks), N slots per task"
            : "Movie: one task, one aerender process (slot settings do not apply)";
        var imageOnly = [ui.framesPerTask, ui.concurrency, ui.maxConcurrency, ui.ramPerProcessGB,
            ui.threadsPerSlot, ui.affinity, ui.numaMap, ui.schedule, ui.chunkSize, ui.spawnDelay,
            ui.failFast, ui.skipExisting];
        for (var j = 0; j < imageOnly.length; j++) { imageOnly[j].enabled = kind === "image"; }
    }
    function updateSource() {
        var src = currentSource();
        ui.fRq.enabled = !!(src && src.rqItem);
        if (!src) { return; }
        // a queue item renders its own time span (aerender -rqindex), not the work area
        if (src.rqItem && !ui.fCustom.value) { ui.fRq.value = true; ui.fWork.value = false; ui.fComp.value = false; }
        else if (!src.rqItem && ui.fRq.value) { ui.fRq.value = false; ui.fWork.value = true; }
        var out = stmpoSourceOutput(src);
        if (out.dir) { ui.outputDir.text = out.dir; }
        ui.outputFileName.text = out.name;
        if (!ui.jobName.text) { ui.jobName.text = src.comp.name; }
        updateKind();
    }
    ui.source.onChange = function () {
        if (ui.refreshing) { return; }
        ui.jobName.text = "";
        updateSource();
    };
    ui.outputFileName.onChanging = updateKind;
    browseOut.onClick = function () {
        var f = Folder.selectDialog("Output folder");
        if (f) { ui.outputDir.text = f.fsName; }
    };
    updateSource();

    function settingsFromUI() {
        var s = {}, keys = ["framesPerTask", "concurrency", "maxConcurrency", "ramPerProcessGB",
            "threadsPerSlot", "mfrMaxCpu", "numaMap", "chunkSize", "spawnDelay", "aerenderPath",
            "brokerUrl", "outputDir", "outputFileName", "profile"];
        for (var j = 0; j < keys.length; j++) { s[keys[j]] = ui[keys[j]].text; }
        var drops = ["mfr", "affinity", "schedule", "failFast", "skipExisting"];
        for (j = 0; j < drops.length; j++) {
            s[drops[j]] = ui[drops[j]].selection ? ui[drops[j]].selection.text : "";
        }
        return s;
    }
    function saveUI() {
        for (var key in ui) {
            if (ui.hasOwnProperty(key) && ui[key] && ui[key].settingKey) {
                var c = ui[key];
                stmpoSaveSetting(c.settingKey, c.selection !== undefined ? (c.selection ? c.selection.text : "") : c.text);
            }
        }
        stmpoSaveSetting("attachFonts", ui.attachFonts.value ? "true" : "false");
        stmpoSaveSetting("attachFootage", ui.attachFootage.value ? "true" : "false");
        stmpoSaveSetting("snapshot", ui.snapshot.value ? "true" : "false");
        stmpoSaveSetting("guiSubmit", ui.guiSubmit.value ? "true" : "false");
    }

    function writeBundle() {
        if (!refreshSources()) {
            throw new Error("the project or its render queue changed since this window read it: "
                + "check 'Render' (read again just now) and submit again");
        }
        var src = currentSource();
        if (!src) { throw new Error("open a comp or add one to the render queue first"); }
        if (!app.project.file) { throw new Error("save the project first: workers render the saved .aep"); }
        // Project.dirty (After Effects 17.5+, undocumented) may be missing: then save anyway
        if (app.project.dirty !== false) {
            var ask = app.project.dirty === true ? "The project has unsaved changes, and workers render the saved file. Save it now?"
                : "Workers render the saved file, and this After Effects cannot say whether the project has unsaved changes. Save it now?";
            if (!confirm(ask)) { throw new Error("not submitted: the project was not saved"); }
            app.project.save();
        }
        var s = settingsFromUI();
        var kind = stmpoKindFor(s.outputFileName);
        var mode = ui.fCustom.value ? "custom" : ui.fRq.value ? "rq" : ui.fComp.value ? "comp" : "workarea";
        var frames = stmpoFrameSpec(mode, mode === "custom" ? null : stmpoSourceRange(src, mode),
            ui.framesText.text, kind);
        if (!frames.ok) { throw new Error("Frames: " + frames.error); }
        s.frames = frames.spec;
        s.projectFile = app.project.file.fsName;
        s.renderBy = src.rqIndex ? "rqindex" : "comp";
        s.comp = src.rqIndex ? String(src.rqIndex) : src.comp.name;
        if (!src.rqIndex) {
            var compNames = [], comps = stmpoComps();
            for (var c = 0; c < comps.length; c++) { compNames.push(comps[c].name); }
            var clash = stmpoCompNameProblem(src.comp.name, compNames);
            if (clash) { throw new Error(clash); }
        }
        if (stmpoIsUnset(s.condaPackages)) { s.condaPackages = stmpoCondaPackagesFor(app.version); }
        var choice = stmpoChooseBundle(kind, s.framesPerTask, frames.count);
        kind = choice.kind;
        if (kind === "big") { s.taskCount = String(choice.taskCount); }
        var errors = stmpoValidate(s, kind);
        // -comp renders the comp's first queued item (or adds one with the default module)
        var rqIndex = src.rqIndex || stmpoFirstQueuedFor(src.comp);
        if (rqIndex) { errors = errors.concat(stmpoCheckQueueItem(stmpoQueueItemInfo(rqIndex), kind)); }
        if (errors.length) { throw new Error(errors.join("\n")); }

        var templatesDir = ui.templatesDir.text;
        var template = stmpoJoinPath(templatesDir, stmpoTemplateFor(kind), STMPO_IS_WINDOWS);
        if (!new File(template).exists) {
            throw new Error("no stmpo template at " + template + ": set 'stmpo templates folder' to the openjd_bundle folder of stmpo-celery");
        }
        var defined = stmpoTemplateParamNames(stmpoReadText(template));
        var stamp = new Date().getTime().toString(36);
        var dir = stmpoJoinPath(ui.bundleRoot.text, stmpoSafeName(ui.jobName.text) + "_" + stamp, STMPO_IS_WINDOWS);
        if (!new Folder(dir).create()) { throw new Error("cannot create the bundle folder " + dir); }

        var inputDirs = [], inputFiles = [], warnings = [];
        if (choice.why) { warnings.push(choice.why); }
        if (!rqIndex) {
            warnings.push("no queued render-queue item renders this comp: aerender adds one with the worker's "
                + "default output module, and that module decides the format (not the file name's extension)");
        }
        if (!stmpoIsUnset(s.profile) && (stmpoIsUnset(s.threadsPerSlot) || stmpoIsUnset(s.ramPerProcessGB))) {
            warnings.push("the host requirements use stmpo's defaults for what the profile may set: "
                + "the profile is read on the workers, not here");
        }
        if (ui.snapshot.value) {  // workers render this copy, whatever happens to the original
            // next to the project: After Effects finds moved footage by its path relative
            // to the project file, which a copy elsewhere would break
            var snap = stmpoJoinPath(app.project.file.parent.fsName,
                stmpoSnapshotName(app.project.file.name, stamp), STMPO_IS_WINDOWS);
            stmpoCopyFile(s.projectFile, snap);
            s.projectFile = snap;
            warnings.push("the snapshot is " + snap + " (next to the project, so footage paths relative to it hold): "
                + "delete it once the job has rendered");
        }
        inputFiles.push(s.projectFile);
        if (ui.attachFootage.value) {
            var footage = stmpoFootageToAttach(stmpoProjectFootage());
            inputFiles = inputFiles.concat(footage.files);
            inputDirs = inputDirs.concat(footage.dirs);
            for (var m = 0; m < footage.missing.length; m++) { warnings.push("footage missing, not attached: " + footage.missing[m]); }
        }
        if (kind !== "movie" && !stmpoIsUnset(s.numaMap)) { inputFiles.push(stmpoTrim(s.numaMap)); }
        if (ui.attachFonts.value) {
            var picked = stmpoFontsToAttach(stmpoProjectFonts(src.comp));
            if (picked.attach.length) {
                var fontsDir = stmpoJoinPath(dir, "fonts", STMPO_IS_WINDOWS);
                new Folder(fontsDir).create();
                var copyNames = stmpoFontCopyNames(picked.attach);
                for (var j = 0; j < picked.attach.length; j++) {
                    stmpoCopyFile(picked.attach[j], stmpoJoinPath(fontsDir, copyNames[j], STMPO_IS_WINDOWS));
                }
                s.fontsDir = fontsDir;
                inputDirs.push(fontsDir);
            }
            for (j = 0; j < picked.skipped.length; j++) { warnings.push("font not attached: " + picked.skipped[j]); }
        }
        var pv = stmpoParameterValues(s, kind, defined);
        if (pv.errors.length) { throw new Error(pv.errors.join("\n")); }
        for (j = 0; j < pv.dropped.length; j++) { warnings.push("not written: " + pv.dropped[j]); }

        var host = stmpoHostMinimums(s, kind);
        stmpoWriteText(stmpoJoinPath(dir, "template.yaml", STMPO_IS_WINDOWS),
            stmpoWithHostMinimums(stmpoTemplateWithName(stmpoReadText(template), ui.jobName.text),
                host.vcpu, host.memory));
        warnings.push("workers need at least " + host.vcpu + " vCPUs and " + Math.round(host.memory / 1024)
            + " GiB (the fleet's minimums must reach these)");
        stmpoWriteText(stmpoJoinPath(dir, "parameter_values.json", STMPO_IS_WINDOWS),
            stmpoToJson(stmpoParameterValuesDocument(pv.values)) + "\n");
        stmpoWriteText(stmpoJoinPath(dir, "asset_references.json", STMPO_IS_WINDOWS),
            stmpoToJson(stmpoAssetReferences(inputFiles, inputDirs, [stmpoTrim(s.outputDir)])) + "\n");
        saveUI();
        return {dir: dir, kind: kind, frames: s.frames, warnings: warnings};
    }

    function report(b, extra) {
        var text = ({image: "Image sequence", big: "Image sequence (big tasks)"}[b.kind] || "Movie") + " bundle, frames " + b.frames
            + ":\n" + b.dir;
        if (b.warnings.length) { text += "\n\n" + b.warnings.join("\n"); }
        alert(text + (extra ? "\n\n" + extra : ""), "stmpo");
    }

    bWrite.onClick = function () {
        try {
            var b = writeBundle();
            report(b, "Submit it with: deadline bundle submit \"" + b.dir + "\"");
            new Folder(b.dir).execute();
        } catch (e) { alert(e.message, "stmpo: not written", true); }
    };
    bSubmit.onClick = function () {
        var b;
        try { b = writeBundle(); } catch (e) { alert(e.message, "stmpo: not submitted", true); return; }
        if (STMPO_IS_WINDOWS && /[^\x20-\x7e]/.test(b.dir)) {
            report(b, "The bundle folder's path has non-ASCII characters, which the Windows command line may not pass on: submit it from a terminal, or choose another 'Write bundles into' folder.");
            new Folder(b.dir).execute();
            return;
        }
        var shell = STMPO_IS_WINDOWS ? "" : "/bin/zsh";
        var version = system.callSystem(stmpoVersionCommand(ui.deadline.text, STMPO_IS_WINDOWS, shell)) || "";
        if (!/\d+\.\d+/.test(version)) {
            report(b, "The Deadline Cloud CLI does not run here ('" + ui.deadline.text + " --version' said: "
                + stmpoTrim(version).split(/\r?\n/).slice(-3).join(" ") + "): install it, or set 'deadline command' "
                + "to its full path. The bundle is kept; submit it with: deadline bundle submit \"" + b.dir + "\"");
            return;
        }
        if (ui.guiSubmit.value) {  // non-blocking: Deadline's window hashes and uploads
            system.callSystem(stmpoGuiSubmitCommand(ui.deadline.text, b.dir, STMPO_IS_WINDOWS,
                STMPO_IS_WINDOWS ? "" : "/bin/zsh"));
            report(b, "Deadline Cloud's submitter window opens for this bundle: review and submit it there.");
            return;
        }
        var cmd = stmpoSubmitCommand(ui.deadline.text, b.dir, STMPO_IS_WINDOWS,
            STMPO_IS_WINDOWS ? "" : "/bin/zsh");
        var output = system.callSystem(cmd) || "";
        var ok = output.indexOf("STMPO_SUBMIT_OK") >= 0;
        var tail = output.replace("STMPO_SUBMIT_OK", "").split(/\r?\n/).slice(-15).join("\n");
        if (ok) { report(b, "Submitted.\n" + tail); } else {
            alert("deadline bundle submit failed (the bundle is kept in " + b.dir + "):\n\n" + tail, "stmpo: not submitted", true);
        }
    };
    bClose.onClick = function () { if (win instanceof Window) { win.close(); } };

    if (win instanceof Window) { win.center(); win.show(); } else { win.layout.layout(true); }
    return win;
}

if (typeof app !== "undefined" && typeof app.project !== "undefined") {
    (function (thisObj) {
        if (!app.project) { alert("Open or create a project first.", "stmpo"); return; }
        stmpoBuildUI(thisObj);
    }(this));
}
