"""The one HTML stack of tunewise's pages (run, sweep and comparison reports, the curation report).

A page is a child template that extends `base.html`: the base carries a Content-Security-Policy that allows
nothing but inline styles and data: images, so a page opens offline, from e-mail or an artifact store, never runs
script and never fetches anything. Templates render in Jinja2's immutable sandbox with autoescaping on: text
from run files (cell names, labels, errors) is escaped, and a template cannot call methods that change data.
Numbers go through the filters of `tunewise.core.format`, so a page shows them as the console does.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import DictLoader, Template
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tunewise.core import format as fmt
from tunewise.core.safeio import writing

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """\
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1040px;padding:0 1rem;color:#222;line-height:1.4}
h1{margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:1rem 0;width:100%}td,th{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;
vertical-align:top;overflow-wrap:break-word}th{background:#f3f3f3}.wrap{overflow-wrap:anywhere}.pre{white-space:pre-wrap}
.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap;overflow-wrap:normal}th.n,.ci{white-space:normal}
table.kv{width:auto;min-width:50%}table.kv th{font-weight:normal;color:#555;white-space:nowrap}
.note{background:#fff6d5;padding:.5rem 1rem;border-left:4px solid #e0b000;margin:1rem 0}
.sig{color:#1a7f37;font-weight:600}.best td{background:#eaf7ea}.muted{color:#777;font-size:.9em}
img{max-width:100%;height:auto}.grid{display:flex;flex-wrap:wrap;gap:1rem}.grid img{max-width:480px}
pre{background:#f6f8fa;padding:.8rem;overflow-x:auto;border:1px solid #ddd;font-size:.85em}
"""
# Blocks a page fills: title, style (CSS of its own, after the shared rules), body, footer.
BASE = (
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
    f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    "<title>{% block title %}{% endblock %}</title>\n"
    f"<style>\n{CSS}{{% block style %}}{{% endblock %}}</style></head><body>{{% block body %}}{{% endblock %}}\n"
    "{% block footer %}{% endblock %}</body></html>\n"
)
FILTERS = {
    "duration": fmt.duration,
    "seconds": fmt.seconds,
    "metric": fmt.metric,
    "signed": fmt.signed,
    "count": fmt.count,
    "param": fmt.param,
    "pvalue": fmt.format_p_value,  # `0.012` or `≤ 0.001`, for a p column
    "p_statement": fmt.format_p,  # `p = 0.012` or `p ≤ 0.001`, in running text
}


@functools.cache
def environment() -> ImmutableSandboxedEnvironment:
    """The sandboxed, autoescaping environment every page renders in, with `base.html` and the FILTERS."""
    env = ImmutableSandboxedEnvironment(loader=DictLoader({"base.html": BASE}), autoescape=True)
    env.filters.update(FILTERS)
    return env


@functools.lru_cache(maxsize=32)
def _template(source: str) -> Template:
    return environment().from_string(source)


def render_page(child: str, context: Mapping[str, Any]) -> str:
    """The HTML of a page: `child` is the source of a template that extends "base.html"."""
    return _template(child).render(**context)


def write_page(out: Path, html: str, hint: str | None = None) -> Path:
    """Write a page through a temporary file renamed over `out`: a browser refreshing it never reads half of it.
    A full disk is a one-line TunewiseError naming the file, with `hint` saying what to do."""
    tmp = out.with_name(out.name + ".tmp")
    try:
        with writing(out, hint):
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(html, encoding="utf-8")
            tmp.replace(out)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return out
