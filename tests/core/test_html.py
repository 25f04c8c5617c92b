"""The one HTML stack (core/html.py): base page with its CSP, autoescaping, the sandbox, filters, atomic writes."""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest
from jinja2.exceptions import SecurityError

from tunewise.core import html
from tunewise.errors import TunewiseError

PAGE = """{% extends "base.html" %}{% block title %}T {{ name }}{% endblock %}
{% block style %}.own{color:red}{% endblock %}{% block body %}<h1>{{ name }}</h1>{% endblock %}"""


def _f() -> None:
    """A function whose globals a template must not reach."""


def test_a_page_carries_the_csp_the_shared_css_and_its_own_blocks():
    page = html.render_page(PAGE, {"name": "run-1"})
    assert page.startswith("<!doctype html>") and page.endswith("</body></html>")
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', page).group(1)
    assert csp == "default-src 'none'; img-src data:; style-src 'unsafe-inline'" == html.CSP
    assert page.index("<meta http-equiv") < page.index("<style>")  # a meta CSP governs only what follows it
    assert html.CSS in page and ".own{color:red}</style>" in page  # a page's own rules come after the shared ones
    assert "<title>T run-1</title>" in page and "<h1>run-1</h1>" in page


def test_the_base_names_no_external_resource():
    assert not re.search(r"(?:src|href)=|@import|url\(|<script|<link", html.BASE)


def test_text_from_run_files_is_escaped():
    page = html.render_page(PAGE, {"name": '<script>alert("x")</script> & <img src=x onerror=1>'})
    assert "<script>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;img src=x onerror=1&gt;" in page


def test_the_sandbox_refuses_to_change_data_or_reach_python_internals():
    with pytest.raises(SecurityError):
        html.render_page('{% extends "base.html" %}{% block body %}{{ rows.append(1) }}{% endblock %}', {"rows": []})
    for reach in ('"".__class__.__mro__', "f.__globals__.keys()", '"".__class__()'):
        with pytest.raises(SecurityError, match="unsafe"):
            html.render_page('{% extends "base.html" %}{% block body %}{{ ' + reach + " }}{% endblock %}", {"f": _f})
    hidden = html.render_page('{% extends "base.html" %}{% block body %}[{{ f.__globals__ }}]{% endblock %}', {"f": _f})
    assert "<body>[]" in hidden  # an unsafe attribute is undefined: shown as nothing


def test_the_filters_are_the_console_formatters():
    body = (
        "{{ 0.5|metric }} {{ 0.025|signed }} {{ 1234|count }} {{ 187.4|duration }} {{ 3|seconds }} "
        "{{ 0.0003|param }} {{ p|pvalue(1000) }} | {{ p|p_statement(n) }} | {{ none|metric }} {{ q|pvalue }}"
    )
    page = html.render_page(
        '{% extends "base.html" %}{% block body %}' + body + "{% endblock %}", {"p": 1 / 1001, "n": None, "none": None}
    )
    shown = page.split("<body>")[1].split("\n")[0]
    assert shown == "0.5000 +0.0250 1,234 3m07s 3.0 0.0003 ≤ 0.001 | p ≤ 0.001 | — —"


def test_write_page_replaces_the_file_whole_and_leaves_no_temporary(tmp_path: Path):
    out = tmp_path / "pages" / "page.html"
    assert html.write_page(out, "<p>one</p>") == out
    html.write_page(out, "<p>two</p>")
    assert out.read_text(encoding="utf-8") == "<p>two</p>" and [p.name for p in out.parent.iterdir()] == ["page.html"]


def test_a_full_disk_while_writing_a_page_is_one_line_and_keeps_the_old_page(tmp_path: Path, monkeypatch):
    out = tmp_path / "page.html"
    out.write_text("old", encoding="utf-8")

    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", no_space)
    with pytest.raises(TunewiseError, match="no space left on device") as raised:
        html.write_page(out, "new", hint="free some space and run it again")
    assert "free some space and run it again" in str(raised.value) and "\n" not in str(raised.value)
    monkeypatch.undo()
    assert out.read_text(encoding="utf-8") == "old" and [p.name for p in tmp_path.iterdir()] == ["page.html"]
