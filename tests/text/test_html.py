"""HTML in, HTML out (service/text/html.py) with deterministic fake translators: what is
translated, what is left byte for byte, where tags come back, and what happens to a tag the
translation lost."""

from __future__ import annotations

import re
from pathlib import Path

import lxml.html
import pytest

from service.text.html import HtmlError, HtmlPage, translate_html
from service.text.segment import protect_units, segment_text

FIXTURE = Path(__file__).parent / "fixtures" / "libffi-thread-safety.html"


def as_the_service_does(run: str) -> str:
    """What the translation routes do to a run: sentences, protected spans (markers
    included) kept verbatim, each unit "translated" (upper-cased) on its own."""
    layout = segment_text(run, "es")
    protect_units(layout)
    return layout.join([unit.upper() for unit in layout.units])


def upper(runs: list[str]) -> list[str]:
    return [as_the_service_does(run) for run in runs]


def test_a_fragment_comes_back_a_fragment_with_tags_around_their_words():
    source = 'Hola <b>mundo</b>. <a href="x?a=1&amp;b=2" title="caf&eacute;">Un enlace</a>.'
    out = translate_html(source, upper)
    assert out.html == (
        'HOLA <b>MUNDO</b>. <a href="x?a=1&amp;b=2" title="caf&eacute;">UN ENLACE</a>.'
    )
    assert out.restored == 0


def test_the_translator_never_sees_markup_or_entities():
    seen: list[str] = []

    def record(runs):
        for run in runs:
            layout = segment_text(run, "es")
            protect_units(layout)
            seen.extend(layout.units)
        return upper(runs)

    translate_html('<p>Caf&eacute; <em class="x">con</em> leche&nbsp;fr&iacute;a.</p>', record)
    assert seen == ["Café", "con", "leche\xa0fría."]
    assert not any("<" in unit or "&" in unit for unit in seen)


def test_scripts_styles_comments_code_pre_and_attributes_are_left_as_they_were():
    source = (
        '<p lang="es" data-x="a &lt; b">Uno <code>a &lt; b &amp;&amp; c</code> dos.</p>'
        '<script>if (a < b && c) { say("hola"); }</script>'
        "<style>p { content: 'hola'; }</style><!-- hola, comentario -->"
        "<pre>hola\n  mundo</pre><textarea>hola</textarea>"
    )
    out = translate_html(source, upper).html
    assert out == (
        '<p lang="es" data-x="a &lt; b">UNO <code>a &lt; b &amp;&amp; c</code> DOS.</p>'
        '<script>if (a < b && c) { say("hola"); }</script>'
        "<style>p { content: 'hola'; }</style><!-- hola, comentario -->"
        "<pre>hola\n  mundo</pre><textarea>hola</textarea>"
    )


def test_entities_inside_translated_text_come_back_as_characters_escaped_where_needed():
    out = translate_html("<p>Tom &amp; Jerry &lt;3 caf&eacute;</p>", upper).html
    assert out == "<p>TOM &amp; JERRY &lt;3 CAFÉ</p>"


def test_a_real_page_comes_back_a_whole_document_with_everything_but_its_text_intact():
    source = FIXTURE.read_text()
    page = HtmlPage(source)
    assert page.document
    assert page.render(page.texts).html == source  # nothing translated: byte for byte
    out = page.render(upper(page.texts)).html
    assert out.startswith('<!DOCTYPE html PUBLIC "-//W3C//DTD HTML 4.01 Transitional//EN"')
    assert "<title>THREAD SAFETY (LIBFFI: THE PORTABLE" in out
    assert "<p><code>libffi</code> IS NOT COMPLETELY THREAD-SAFE." in out
    assert (
        'PREVIOUS: <a href="Closure-Example.html" accesskey="p" rel="prev">CLOSURE EXAMPLE</a>'
    ) in out
    assert "&nbsp; [" in out  # an entity in a verbatim gap of a translated run
    # What is not text is exactly as it was: the licence comment, the style sheet, the meta.
    for kept in (
        source[source.index("<!-- \nThis manual") : source.index("-->", 1000) + 3],
        source[source.index("<style") : source.index("</style>") + 8],
        '<meta name="description" content="Thread Safety (libffi: the portable foreign '
        'function interface library)">',
    ):
        assert kept in out
    # Well-formed, and the same elements in the same order.
    before = lxml.html.document_fromstring(source)
    after = lxml.html.document_fromstring(out)
    assert [e.tag for e in before.iter()] == [e.tag for e in after.iter()]
    assert [dict(e.attrib) for e in before.iter()] == [dict(e.attrib) for e in after.iter()]
    assert out.endswith("</html>\n")


def test_fragment_and_document_detection():
    assert not HtmlPage("<p>Hola</p>").document
    assert not HtmlPage("Hola <b>mundo</b>").document
    assert HtmlPage("<!doctype html><p>Hola</p>").document
    assert HtmlPage("<!-- c -->\n<html><body>Hola</body></html>").document
    fragment = translate_html("  <ul><li>uno</li><li>dos</li></ul>\n", upper).html
    assert fragment == "  <ul><li>UNO</li><li>DOS</li></ul>\n"
    assert "<body" not in fragment and "<html" not in fragment
    declared = '<?xml version="1.0" encoding="utf-8"?>\n<html><body><p>hola</p></body></html>'
    assert translate_html(declared, upper).html == (
        '<?xml version="1.0" encoding="utf-8"?>\n<html><body><p>HOLA</p></body></html>'
    )


def test_runs_without_letters_are_not_translated():
    page = HtmlPage("<table><tr><td>&nbsp;</td><td>2024</td><td><br></td></tr></table>")
    assert page.texts == []
    assert page.render([]).html == page.source


def test_a_block_inside_an_inline_element_is_a_block():
    page = HtmlPage('<a href="#"><div>Hola</div> <span>mundo</span></a>')
    assert [re.sub(r"<[^>]*>", "", t) for t in page.texts] == ["Hola", " mundo"]
    assert page.render(upper(page.texts)).html == (
        '<a href="#"><div>HOLA</div> <span>MUNDO</span></a>'
    )


def test_tags_follow_their_words_when_the_translation_reorders_them():
    page = HtmlPage("<p><b>rojo</b> <i>coche</i></p>")
    (run,) = page.texts
    b_open, b_close, i_open, i_close = re.findall(r"</?x[^>]*>", run)
    reordered = f"{i_open}CAR{i_close} {b_open}RED{b_close}"
    assert page.render([reordered]).html == "<p><i>CAR</i> <b>RED</b></p>"


def test_a_lost_tag_never_loses_text_it_is_restored_at_the_end_of_its_run():
    page = HtmlPage('<p>Hola <a href="/m">mundo</a> y <code>x = 1</code> fin.</p><p>Otro.</p>')
    markers = re.compile(r"</?x[^>]*>")
    out = page.render([markers.sub("", run).upper() for run in page.texts])
    assert out.html == ('<p>HOLA MUNDO Y  FIN.<a href="/m"></a><code>x = 1</code></p><p>OTRO.</p>')
    assert out.restored == 2


def test_unbalanced_duplicated_and_unknown_markers():
    page = HtmlPage("<p>uno <b>dos</b> tres</p>")
    (run,) = page.texts
    opening, closing = re.findall(r"</?x[^>]*>", run)
    mark = opening[2]
    bogus = f"<x{mark}7>"
    # The closing marker lost: closed at the end; a second opening and an unknown one dropped.
    out = page.render([f"ONE {opening}TWO {opening}THREE{bogus}"])
    assert out.html == "<p>ONE <b>TWO THREE</b></p>" and out.restored == 0


def test_control_characters_and_odd_input_survive():
    out = translate_html("<p>hola\x01 mundo\ud800</p>", upper).html
    assert out == "<p>HOLA\x01 MUNDO\ud800</p>"
    with pytest.raises(HtmlError):
        HtmlPage("   ")
    with pytest.raises(ValueError):
        HtmlPage("<p>hola</p>").render([])


def test_a_sentence_wrapped_over_source_lines_is_one_sentence():
    page = HtmlPage("<p>Una frase\n   que sigue.\nOtra.</p>\n<pre>uno\ndos</pre>")
    assert page.texts == ["Una frase que sigue. Otra."]
    layout = segment_text(page.texts[0], "es")
    assert layout.units == ["Una frase que sigue.", "Otra."]
    assert page.render(upper(page.texts)).html == (
        "<p>UNA FRASE QUE SIGUE. OTRA.</p>\n<pre>uno\ndos</pre>"
    )
