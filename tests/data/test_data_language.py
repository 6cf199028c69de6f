"""The per-paragraph stop-word vote and the man-page rendering helpers."""
from __future__ import annotations

import shutil

import pytest

from simfed.data.sources.language import keep_language, paragraph_language
from simfed.data.sources.manpages import is_alias, render

GERMAN = ("Auflistung von Informationen über die DATEIen. Die Einträge werden alphabetisch sortiert, "
          "falls weder -cftuvSUX noch --sort angegeben wurden, und es wird nicht rekursiv gesucht.")
ENGLISH = ("List information about the FILEs. Entries are sorted alphabetically if none of -cftuvSUX "
           "nor --sort is specified, and the listing is not recursive by default.")
DUTCH = "Codeert of decodeert BESTAND (of standaard invoer) naar standaard uitvoer, en toont het resultaat."


def test_keeps_the_german_paragraph_and_drops_the_english_one():
    assert paragraph_language(GERMAN) == "de"
    assert paragraph_language(ENGLISH) == "en"
    assert keep_language(f"{GERMAN}\n\n{ENGLISH}\n\n-a, --all", "de") == GERMAN


def test_dutch_is_not_mistaken_for_english_or_german():
    assert paragraph_language(DUTCH) == "nl"


def test_alias_pages_are_recognised():
    assert is_alias('.\\" comment\n.so man1/ls.1\n')
    assert not is_alias(".TH LS 1\n.SH NAME\nls \\- list\n")


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_render_drops_header_and_footer():
    page = ".TH DEMO 1 2024 demo\n.SH NAME\ndemo \\- zeigt etwas an\n.SH BESCHREIBUNG\nDies ist ein Test.\n"
    text = render(page)
    assert "DEMO(1)" not in text and "2024" not in text
    assert text.startswith("NAME") and "Dies ist ein Test." in text
