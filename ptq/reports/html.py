"""HTML building blocks for the report: escaping, number formatting, tables, the page shell.

Everything the page needs is inline (CSS, one tiny sort script, images as data URIs or
SVG), so the file opens offline and can be attached to a review as it is. All text
from the input files goes through `esc` (node names are user data); the only markup
that is not escaped here is markup this package generated itself.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from ptq.version import __version__


@dataclass(frozen=True)
class Section:
    """One top-level part of the page; `anchor` is its id for the navigation bar."""

    anchor: str
    title: str
    body: str


@dataclass(frozen=True)
class Cell:
    """A table cell: `html` is shown, `sort` (a number or text) is what the sort script uses."""

    html: str
    sort: float | str | None = None
    cls: str = ""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def num(value: float | None, digits: int = 4) -> str:
    """Short, stable number text; non-finite values are spelled out, never hidden."""
    if value is None:
        return "–"
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "−Inf"
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e5:
        return f"{value:.{digits}g}"
    return f"{value:.{max(1, digits - 2)}e}"


def pct(value: float) -> str:
    return "0%" if value == 0 else (f"{100 * value:.3g}%" if value >= 1e-4 else "<0.01%")


def cell(value: object, *, sort: float | str | None = None, cls: str = "") -> Cell:
    """A cell from a plain value: numbers are formatted and right-aligned, text escaped."""
    if isinstance(value, Cell):
        return value
    if isinstance(value, bool) or value is None:
        return Cell(esc("–" if value is None else value), None, cls)
    if isinstance(value, (int, float)):
        key = float(value) if math.isfinite(float(value)) else None
        return Cell(num(value), key if sort is None else sort, ("num " + cls).strip())
    return Cell(esc(value), sort, cls)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, sortable: bool = False,
          cls: str = "", caption: str = "") -> str:
    """A table of escaped cells; with `sortable` every header sorts its column on click."""
    head = "".join(f"<th scope=\"col\">{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = [cell(v) for v in row]
        tds = []
        for c in cells:
            attrs = f" class=\"{c.cls}\"" if c.cls else ""
            if c.sort is not None:
                attrs += f" data-sort=\"{esc(c.sort)}\""
            tds.append(f"<td{attrs}>{c.html}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    classes = " ".join(x for x in ("sortable" if sortable else "", cls) if x)
    cap = f"<caption>{caption}</caption>" if caption else ""
    return (f"<div class=\"scroll\"><table class=\"{classes}\">{cap}<thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def note(text: str, kind: str = "note") -> str:
    """A highlighted paragraph; `text` must already be escaped markup."""
    return f"<p class=\"{kind}\">{text}</p>"


def image(data_uri: str, alt: str, width: int, height: int) -> str:
    return (f"<img src=\"{data_uri}\" alt=\"{esc(alt)}\" width=\"{width}\" height=\"{height}\" "
            "loading=\"eager\">")


CSS = """
:root{--fg:#1d2430;--muted:#5b6472;--line:#d8dde5;--bg:#ffffff;--alt:#f5f7fa;--accent:#1f5fbf;
--warn:#8a5a00;--warnbg:#fff6e0;--bad:#a4262c;--badbg:#fdecec;--ok:#1e6b34;--okbg:#e9f6ec}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,
"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
main{max-width:1240px;margin:0 auto;padding:0 20px 48px}
header.top{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid var(--line)}
header.top div{max-width:1240px;margin:0 auto;padding:8px 20px;display:flex;gap:18px;
flex-wrap:wrap;align-items:baseline}
header.top strong{font-size:15px}
nav a{color:var(--accent);text-decoration:none;margin-right:14px}
h1{font-size:22px;margin:22px 0 4px}h2{font-size:18px;margin:34px 0 8px;padding-top:6px;
border-top:2px solid var(--line)}h3{font-size:15px;margin:20px 0 6px}
.muted{color:var(--muted)}code,.mono{font-family:ui-monospace,"DejaVu Sans Mono",monospace;
font-size:12.5px;overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
caption{caption-side:top;text-align:left;color:var(--muted);font-size:12.5px;padding:2px 0 4px}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:middle}
th{background:var(--alt);font-weight:600;white-space:nowrap}
td{overflow-wrap:anywhere}
td.mono{white-space:nowrap;overflow-wrap:normal}
tbody tr:nth-child(even){background:#fafbfc}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th:after{content:" \\2195";color:#9aa3af;font-weight:400}
table.sortable th.asc:after{content:" \\2191";color:var(--fg)}
table.sortable th.desc:after{content:" \\2193";color:var(--fg)}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:8px 0}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0;overflow-wrap:anywhere}
p.note{background:var(--alt);border-left:4px solid #9aa3af;padding:6px 10px}
p.warn{background:var(--warnbg);border-left:4px solid #d89a00;padding:6px 10px}
p.bad{background:var(--badbg);border-left:4px solid var(--bad);padding:6px 10px}
p.ok{background:var(--okbg);border-left:4px solid var(--ok);padding:6px 10px}
.tag{display:inline-block;padding:0 6px;border-radius:3px;font-size:12px;font-weight:600}
.int8{background:#e3eefc;color:#1f4f99}.fp16{background:#fff1d6;color:#7a4d00}
.fp32{background:#f0e6f7;color:#5c2d80}
figure{margin:8px 0 16px}figure img{max-width:100%;height:auto;border:1px solid var(--line)}
figcaption{color:var(--muted);font-size:12.5px;max-width:900px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:8px 18px}
details{margin:8px 0;border:1px solid var(--line);border-radius:4px;padding:4px 10px}
details>summary{cursor:pointer;font-weight:600;padding:4px 0}
svg.spark{display:block}
ul.warnings li{margin:4px 0}
.legend span{margin-right:12px;white-space:nowrap}
"""

# Sorts a table.sortable by the clicked column: numbers by data-sort, text otherwise.
SORT_JS = """
(function(){"use strict";
function key(td){var v=td.getAttribute("data-sort");if(v===null){v=td.textContent;}
var n=v.trim()===""?NaN:Number(v);return isNaN(n)?{t:1,v:v.toLowerCase()}:{t:0,v:n};}
function cmp(a,b){if(a.t!==b.t){return a.t-b.t;}return a.v<b.v?-1:(a.v>b.v?1:0);}
document.querySelectorAll("table.sortable").forEach(function(tbl){
var ths=tbl.querySelectorAll("thead th");
ths.forEach(function(th,col){th.addEventListener("click",function(){
var desc=th.classList.contains("asc");ths.forEach(function(h){h.classList.remove("asc","desc");});
th.classList.add(desc?"desc":"asc");var body=tbl.tBodies[0];
var rows=Array.prototype.slice.call(body.rows);
rows.sort(function(r1,r2){var c=cmp(key(r1.cells[col]),key(r2.cells[col]));return desc?-c:c;});
rows.forEach(function(r){body.appendChild(r);});});});});})();
"""


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole document: a sticky header with links to each section, then the sections."""
    nav = "".join(f"<a href=\"#{s.anchor}\">{esc(s.title)}</a>" for s in sections)
    body = "".join(f"<section id=\"{s.anchor}\"><h2>{esc(s.title)}</h2>{s.body}</section>"
                   for s in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<meta name=\"generator\" content=\"ptq {esc(__version__)}\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<header class=\"top\"><div><strong>{esc(title)}</strong><nav>{nav}</nav></div></header>"
            f"<main><h1>{esc(title)}</h1><p class=\"muted\">{subtitle}</p>{body}</main>"
            f"<script>{SORT_JS}</script></body></html>\n")
