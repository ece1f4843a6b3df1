"""Flame graphs as inline SVG: no script, no stylesheet, no network, so a report that holds one
reads anywhere (a mail attachment, an air-gapped host).

Input: ``{stack: value}``, a stack being a tuple of frames innermost first (``profiles_otlp.Frame``
or anything with ``function``, ``file`` and ``line``), the value an estimate (bytes or blocks).
The outermost frames sit at the bottom; each frame's width is its share of the total; frames of
the same ``file:function:line`` under the same parent are one box. A box's tooltip (an SVG
``<title>``) gives its full label, value and share; boxes narrower than a few pixels are merged
into nothing (their value still counts in their parent's width).
"""
from __future__ import annotations

import hashlib
from html import escape

WIDTH = 1200
ROW = 18
FONT = 12
CHAR = 7.0  # average advance of a 12 px sans-serif character, for cutting labels to fit
MIN_WIDTH = 0.5  # pixels: narrower boxes are not drawn


class _Node:
    __slots__ = ("label", "value", "children")

    def __init__(self, label):
        self.label = label
        self.value = 0.0
        self.children = {}


def frame_label(frame):
    function = getattr(frame, "function", str(frame))
    file = getattr(frame, "file", "")
    line = getattr(frame, "line", 0)
    if not file:
        return function
    return f"{function} ({file}:{line})" if line else f"{function} ({file})"


def _tree(stacks):
    root = _Node("all")
    for stack, value in stacks.items():
        if value <= 0:
            continue
        root.value += value
        node = root
        for frame in reversed(tuple(stack)):  # outermost first
            label = frame_label(frame)
            child = node.children.get(label)
            if child is None:
                child = node.children[label] = _Node(label)
            child.value += value
            node = child
    return root


def _color(label):
    """A warm colour that depends on the function's name only (the same function has the same
    colour in every graph)."""
    digest = hashlib.blake2b(label.split(" (", 1)[0].encode(), digest_size=3).digest()
    return f"rgb({205 + digest[0] % 50},{80 + digest[1] % 120},{40 + digest[2] % 50})"


def _fit(label, width):
    room = int((width - 6) / CHAR)
    if room < 3:
        return ""
    return label if len(label) <= room else label[: room - 2] + ".."


def render_svg(stacks, title, unit="bytes", format_value=None):
    """The flame graph of ``stacks`` as one ``<svg>`` element (a string)."""
    fmt = format_value or (lambda v: f"{v:,.0f} {unit}")
    root = _tree(stacks)
    boxes = []
    depth_max = 0
    if root.value > 0:
        scale = WIDTH / root.value
        todo = [(root, 0.0, 0)]
        while todo:
            node, x, depth = todo.pop()
            width = node.value * scale
            if width < MIN_WIDTH:
                continue
            depth_max = max(depth_max, depth)
            boxes.append((node, x, depth, width))
            cx = x
            for child in sorted(node.children.values(), key=lambda c: c.label):
                todo.append((child, cx, depth + 1))
                cx += child.value * scale
    height = (depth_max + 1) * ROW + 2 * ROW
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="flamegraph" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="{FONT}">',
           f'<text x="4" y="{FONT + 2}" font-weight="bold">{escape(title)}</text>']
    if root.value <= 0:
        out.append(f'<text x="4" y="{ROW + FONT + 4}">(no samples)</text>')
    for node, x, depth, width in boxes:
        y = height - (depth + 1) * ROW
        share = node.value / root.value * 100
        tip = f"{node.label}: {fmt(node.value)} ({share:.1f}%)"
        color = "rgb(220,220,220)" if node is root else _color(node.label)
        out.append(f'<g><title>{escape(tip)}</title>'
                   f'<rect x="{x:.2f}" y="{y}" width="{max(width - 0.5, 0.5):.2f}" height="{ROW - 1}" fill="{color}"/>')
        text = _fit("all" if node is root else node.label, width)
        if text:
            out.append(f'<text x="{x + 3:.2f}" y="{y + FONT + 1}">{escape(text)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)
