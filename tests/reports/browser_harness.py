"""Drive the real Debian ``chromium`` headless to check a report the way a reviewer opens it.

No DevTools websocket client is needed (none is installed); three plain command-line runs:

1. ``--dump-dom`` of the UNMODIFIED page with ``--enable-logging=stderr --v=0``: Chromium
   logs every console message as ``...:INFO:CONSOLE:<line>] "<message>", source: <url>``
   (uncaught exceptions included), so any such line is a console error or stray log.
2. ``--dump-dom`` of a COPY with a probe injected: an error listener first in <head>
   (script errors, failed resource loads, console.error), and a script at the end that,
   after ``load``, opens every <details>, records each <img>'s ``complete``/``naturalWidth``,
   the resources fetched, the page and table widths at 1366 px, exercises the sortable tables by
   clicking headers, and writes all of it as JSON into ``<pre id="ptq-probe">``.
   ``--virtual-time-budget`` makes Chromium wait for load and timers before dumping.
3. ``--screenshot`` of the unmodified page at 1366x900 for a pixel-variance check.

`negative control` tests feed a deliberately broken page through the same functions, so
every check here is shown to fail when it should.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--window-size=1366,900"]
CONSOLE_LINE = re.compile(r":CONSOLE[:(]\d*\)?\]\s*(.*)|Uncaught .*")

PROBE_HEAD = """<script>(function(){window.__probeErrors=[];
function add(m){window.__probeErrors.push(String(m));}
window.addEventListener("error",function(e){var t=e.target;
add(t&&t!==window&&t.tagName?("resource failed: "+t.tagName+" "+String(t.src||t.href||"").slice(0,60))
:("error: "+e.message));},true);
window.addEventListener("unhandledrejection",function(e){add("unhandled rejection: "+e.reason);});
["error","warn"].forEach(function(k){var o=console[k];console[k]=function(){
add("console."+k+": "+Array.prototype.join.call(arguments," "));o.apply(console,arguments);};});
})();</script>"""

PROBE_TAIL = """<script>window.addEventListener("load",function(){
var out={};try{
document.querySelectorAll("details").forEach(function(d){d.open=true;});
out.images=[].map.call(document.images,function(i){return {alt:i.alt,complete:i.complete,
w:i.naturalWidth,h:i.naturalHeight,shown:i.getBoundingClientRect().width};});
out.svgs=[].map.call(document.querySelectorAll("svg.spark"),function(s){
return s.getBoundingClientRect().width;});
out.resources=performance.getEntriesByType("resource").map(function(r){return r.name;});
out.scrollWidth=document.documentElement.scrollWidth;out.innerWidth=window.innerWidth;
out.overflowing=[].filter.call(document.querySelectorAll(".scroll"),function(d){
return d.scrollWidth>d.clientWidth+1;}).map(function(d){return d.querySelector("th").textContent+
" ("+d.scrollWidth+" > "+d.clientWidth+" px)";});
out.sections=[].map.call(document.querySelectorAll("main > section"),function(s){return s.id;});
out.sorts=[].map.call(document.querySelectorAll("table.sortable"),function(tbl){
var heads=[].map.call(tbl.tHead.rows[0].cells,function(h){return h.textContent;});
var res={heads:heads,clicks:[]};
for(var c=0;c<heads.length;c++){for(var k=0;k<2;k++){tbl.tHead.rows[0].cells[c].click();
res.clicks.push({col:c,cls:tbl.tHead.rows[0].cells[c].className,values:[].map.call(
tbl.tBodies[0].rows,function(r){var td=r.cells[c];var v=td.getAttribute("data-sort");
return v===null?td.textContent:v;})});}}return res;});
}catch(e){window.__probeErrors.push("probe: "+e);}
out.errors=window.__probeErrors;var pre=document.createElement("pre");pre.id="ptq-probe";
pre.textContent=JSON.stringify(out);document.body.appendChild(pre);});</script>"""


def available() -> bool:
    return CHROMIUM.is_file() and shutil.which(str(CHROMIUM)) is not None


def run(url: str, tmp: Path, *extra: str, timeout: float = 90.0) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def console_messages(page: Path, tmp: Path) -> list[str]:
    """Console output (errors, uncaught exceptions, any log) while loading `page` unmodified."""
    proc = run(page.resolve().as_uri(), tmp, "--enable-logging=stderr", "--v=0",
               "--virtual-time-budget=5000", "--dump-dom")
    if proc.returncode != 0 or "</html>" not in proc.stdout:
        raise RuntimeError(f"chromium failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return [m.group(0) for line in proc.stderr.splitlines() if (m := CONSOLE_LINE.search(line))]


@dataclass(frozen=True)
class Probe:
    images: list[dict]
    svgs: list[float]
    resources: list[str]
    scroll_width: int
    inner_width: int
    overflowing: list[str]      # tables that need sideways scrolling at 1366 px
    sections: list[str]
    sorts: list[dict]
    errors: list[str]


def probe(page: Path, tmp: Path) -> Probe:
    """Load an instrumented copy of `page` and return what the in-page probe recorded."""
    text = page.read_text(encoding="utf-8")
    head = text.index("<head>") + len("<head>")
    tail = text.rindex("</body>")
    copy = tmp / f"probed-{page.name}"
    copy.write_text(text[:head] + PROBE_HEAD + text[head:tail] + PROBE_TAIL + text[tail:],
                    encoding="utf-8")
    proc = run(copy.as_uri(), tmp, "--virtual-time-budget=10000", "--dump-dom")
    found = re.search(r'<pre id="ptq-probe">(.*?)</pre>', proc.stdout, re.S)
    if found is None:
        raise RuntimeError(f"probe did not report (exit {proc.returncode}): {proc.stderr[-2000:]}")
    import html
    d = json.loads(html.unescape(found.group(1)))
    return Probe(d.get("images", []), d.get("svgs", []), d.get("resources", []),
                 d.get("scrollWidth", 0), d.get("innerWidth", 0), d.get("overflowing", []),
                 d.get("sections", []),
                 d.get("sorts", []), d.get("errors", []))


def screenshot(page: Path, tmp: Path) -> Path:
    out = tmp / f"{page.stem}.png"
    proc = run(page.resolve().as_uri(), tmp, f"--screenshot={out}", "--virtual-time-budget=5000")
    if not out.is_file():
        raise RuntimeError(f"no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return out
