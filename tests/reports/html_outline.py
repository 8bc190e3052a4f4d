"""A structural view of a report page, parsed with the standard library's html.parser.

Independent of how ptq builds the page: it only sees tags, attributes and text.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Table:
    section: str | None
    caption: str = ""
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    sortable: bool = False


@dataclass
class Outline:
    sections: list[str] = field(default_factory=list)
    headings: dict[str, list[str]] = field(default_factory=dict)   # section -> h2/h3 texts
    tables: list[Table] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)                # attrs + section
    urls: list[str] = field(default_factory=list)                   # every src/href/action
    tags: dict[str, int] = field(default_factory=dict)
    scripts: list[str] = field(default_factory=list)                 # inline script bodies
    text: dict[str, str] = field(default_factory=dict)               # section -> all its text
    details: int = 0
    svg_in_details: int = 0

    def tables_in(self, section: str) -> list[Table]:
        return [t for t in self.tables if t.section == section]


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out = Outline()
        self.section: str | None = None
        self.stack: list[str] = []
        self.table: Table | None = None
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.in_head_row = False
        self.capture: list[str] | None = None
        self.script: list[str] | None = None
        self.open_details = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.out.tags[tag] = self.out.tags.get(tag, 0) + 1
        for key in ("src", "href", "action", "xlink:href"):
            if key in a:
                self.out.urls.append(a[key] or "")
        if tag == "section":
            self.section = a.get("id")
            self.out.sections.append(self.section)
        elif tag == "details":
            self.out.details += 1
            self.open_details += 1
        elif tag == "svg" and self.open_details:
            self.out.svg_in_details += 1
        elif tag == "img":
            self.out.images.append({**a, "section": self.section})
        elif tag == "table":
            self.table = Table(self.section, sortable="sortable" in (a.get("class") or "").split())
        elif tag == "thead":
            self.in_head_row = True
        elif tag == "tbody":
            self.in_head_row = False
        elif tag == "tr" and self.table is not None:
            self.row = []
        elif tag in ("td", "th", "caption") and self.table is not None:
            self.cell = []
        elif tag in ("h2", "h3"):
            self.capture = []
        elif tag == "script":
            self.script = []
        if tag not in ("img", "br", "meta", "input", "rect", "line", "polygon"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()
        if tag == "details":
            self.open_details -= 1
        elif tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "caption" and self.cell is not None and self.table is not None:
            self.table.caption = " ".join("".join(self.cell).split())
            self.cell = None
        elif tag == "tr" and self.row is not None and self.table is not None:
            if self.in_head_row:
                self.table.headers = self.row
            else:
                self.table.rows.append(self.row)
            self.row = None
        elif tag == "table" and self.table is not None:
            self.out.tables.append(self.table)
            self.table = None
        elif tag in ("h2", "h3") and self.capture is not None:
            self.out.headings.setdefault(self.section, []).append("".join(self.capture).strip())
            self.capture = None
        elif tag == "script" and self.script is not None:
            self.out.scripts.append("".join(self.script))
            self.script = None
        elif tag == "section":
            self.section = None

    def handle_data(self, data):
        for buf in (self.cell, self.capture, self.script):
            if buf is not None:
                buf.append(data)
        if self.section is not None and self.script is None:
            self.out.text[self.section] = self.out.text.get(self.section, "") + data


def outline(html_text: str) -> Outline:
    parser = _Parser()
    parser.feed(html_text)
    parser.close()
    return parser.out
