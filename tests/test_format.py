"""The one formatter of numbers for people (twinml._format): what each kind of value shows."""

import math

import numpy as np

from twinml._format import cell, number, percent, points


def test_percentages_and_points_show_missing_values_as_asked():
    assert percent(0.1234) == "12.3%" and percent(np.float32(0.5), digits=0) == "50%"
    assert [percent(v) for v in (None, math.nan, math.inf)] == ["—"] * 3
    assert percent(math.nan, missing="-") == "-" and percent(None, missing="") == ""
    assert points(0.012) == "+1.2" and points(-0.004) == "-0.4" and points(math.nan, missing="-") == "-"


def test_numbers_keep_text_and_mark_what_is_absent():
    assert number(0.81234) == "0.812" and number(0.81234, 2) == "0.81" and number(3) == "3.000"
    assert number("suppressed") == "suppressed" and number(None) == "—" and number(math.nan) == "—"
    assert number(123.456, 4, style="g") == "123.5" and number(math.inf, 4, style="g") == "—"


def test_report_cells_in_html_and_markdown():
    assert cell(None) == "—" and cell(True) == "yes" and cell(12345) == "12,345" and cell(0.5, digits=2) == "0.50"
    assert cell("suppressed") == '<span class="sup">suppressed</span>' and cell("a<b") == "a&lt;b"
    assert cell(12345, markup="markdown") == "12345" and cell(0.12345, digits=4, markup="markdown") == "0.1235"
    assert cell(None, markup="markdown") == "—"
