"""The flame graph's SVG: well-formed, self-contained, widths proportional to the values, frames of
the same file:function:line under one parent merged, labels escaped."""
import xml.etree.ElementTree as ET

import pytest

from memscope_otel.flamegraph import WIDTH, render_svg
from memscope_otel.profiles_otlp import Frame

NS = {"svg": "http://www.w3.org/2000/svg"}
MAIN, HANDLE, DUMPS, PARSE = (Frame("main", "/app/main.py", 10), Frame("handle", "/app/web.py", 20),
                              Frame("dumps", "/usr/lib/python3/json/__init__.py", 231),
                              Frame("parse<&>", "/app/io.py", 5))


def boxes(svg):
    """{label: (x, width)} of the drawn boxes (their tooltip's label)."""
    root = ET.fromstring(svg)
    out = {}
    for g in root.findall("svg:g", NS):
        label = g.find("svg:title", NS).text.rsplit(":", 1)[0]
        rect = g.find("svg:rect", NS)
        out.setdefault(label, []).append((float(rect.get("x")), float(rect.get("width"))))
    return out


def label(frame):
    return f"{frame.function} ({frame.file}:{frame.line})"


def test_widths_follow_values_and_same_frames_merge():
    stacks = {(DUMPS, HANDLE, MAIN): 600, (PARSE, HANDLE, MAIN): 300, (MAIN,): 100}
    svg = render_svg(stacks, "allocated bytes")
    got = boxes(svg)
    assert "<script" not in svg and "http://" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert len(got[label(MAIN)]) == 1 and len(got[label(HANDLE)]) == 1  # one box per frame and parent
    (_, all_width), = got["all"]
    assert all_width == pytest.approx(WIDTH - 0.5)
    (_, main_width), = got[label(MAIN)]
    (_, handle_width), = got[label(HANDLE)]
    (dumps_x, dumps_width), = got[label(DUMPS)]
    (parse_x, parse_width), = got[label(PARSE)]
    assert main_width + 0.5 == pytest.approx(WIDTH)
    assert handle_width + 0.5 == pytest.approx(WIDTH * 0.9)
    assert dumps_width + 0.5 == pytest.approx(WIDTH * 0.6) and parse_width + 0.5 == pytest.approx(WIDTH * 0.3)
    assert parse_x + parse_width <= dumps_x + 1e-9 or dumps_x + dumps_width <= parse_x + 1e-9  # side by side
    assert "parse&lt;&amp;&gt;" in svg  # escaped


def test_narrow_boxes_are_not_drawn_and_empty_input_says_so():
    stacks = {(MAIN,): 10**9, (PARSE,): 1}
    got = boxes(render_svg(stacks, "t"))
    assert label(MAIN) in got and label(PARSE) not in got
    empty = render_svg({}, "t")
    ET.fromstring(empty)
    assert "(no samples)" in empty
