"""Ollama's Modelfile parser and Go-template renderer, reimplemented: the rules a written Modelfile is checked by."""

from __future__ import annotations

import pytest

from tunewise.errors import ExportError
from tunewise.export.modelfile_syntax import parse_modelfile, render_template


def test_parser_follows_ollamas_rules():
    text = 'FROM x\n# comment\nSYSTEM """a\u200bb\n"""\nTEMPLATE """one """  \ntwo"""\nPARAMETER stop "<|e|>"\n'
    with pytest.raises(ExportError):  # `two"""` is a command Ollama does not know: the TEMPLATE ended early
        parse_modelfile(text)
    parsed = parse_modelfile(text.replace("two", "PARAMETER seed 1 #"))
    assert parsed["SYSTEM"] == ["ab\n"]  # Ollama drops characters Go does not print
    assert parsed["TEMPLATE"] == ["one "]
    assert parsed["PARAMETER"] == [("seed", '1 #"""'), ("stop", "<|e|>")]
    with pytest.raises(ExportError, match="no FROM"):
        parse_modelfile('SYSTEM "x"\n')


def test_render_template_follows_go_for_the_subset_and_refuses_the_rest():
    template = '{{ "a\\n\\u00e9\\"\\\\" }}<{{ .System }}|{{.Prompt}}>{{ `r\\n` }}'
    assert render_template(template, system="{{ .Prompt }}", prompt="p") == 'a\né"\\<{{ .Prompt }}|p>r\\n'
    for bad in ["{{ if .System }}x{{ end }}", "{{- .Prompt }}", '{{ "\\q" }}', "{{ .Prompt "]:
        with pytest.raises(ExportError):
            render_template(bad, system="", prompt="")
