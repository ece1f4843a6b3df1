"""The HTML report in a real browser: headless Chromium loads it without console messages, and its
screenshot shows the plots (not a blank page)."""
import os
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest

from memscope_otel.dump import open_dump
from memscope_otel.report import BAR, LINE, LIVE, analyze, render_html

from synthetic import write_workload_dump


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def read_png(path):
    """RGB(A) pixels of a non-interlaced 8-bit PNG (what Chromium writes), as an (h, w, c) array."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    stride = width * channels
    rows = raw.reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.int32)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        f, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        if f == 0:
            cur = line
        elif f == 2:
            cur = (line + prev) & 255
        else:  # sub, average, paeth: need the pixel to the left, so go byte by byte
            cur = np.zeros(stride, dtype=np.int32)
            for x in range(stride):
                a = cur[x - channels] if x >= channels else 0
                b = prev[x]
                c = prev[x - channels] if x >= channels else 0
                if f == 1:
                    pred = a
                elif f == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[x] = (line[x] + pred) & 255
        out[y] = cur
        prev = cur
    return out.reshape(height, width, channels)[:, :, :3]


def hex_rgb(color):
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))


def test_html_report_renders_in_chromium(tmp_path):
    browser = find_chromium()
    if browser is None:
        if os.environ.get("MEMSCOPE_REQUIRE_INTEGRATION") == "1":
            pytest.fail("MEMSCOPE_REQUIRE_INTEGRATION=1 but no chromium binary is installed (apt-get install chromium)")
        pytest.skip("headless Chromium is not installed (Debian package `chromium`)")
    dump = tmp_path / "w.msdump"
    write_workload_dump(dump)
    page = tmp_path / "report.html"
    page.write_text(render_html(analyze(open_dump(dump))), encoding="utf-8")
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         # half scale: a quarter of the pixels for the pure-Python PNG decoder below
         "--window-size=1000,4200", "--force-device-scale-factor=0.5", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Chromium logs every console message of the page as a CONSOLE line; the page has no script, so
    # any such line is an error (a blocked resource, a CSP violation, a parse error).
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console
    pixels = read_png(shot)
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 450
    white = (pixels == 255).all(axis=2)
    assert white.mean() < 0.97, "the screenshot is (almost) blank"
    colors = {tuple(c) for c in pixels.reshape(-1, 3)[::7]}
    assert len(colors) > 50, "the screenshot has almost no distinct colors"
    # the plots are drawn: bars in their color, each line's stroke and the light area under it
    def near(rgb, tolerance):
        return int((np.abs(pixels - np.array(rgb)) <= tolerance).all(axis=2).sum())

    assert near(hex_rgb(BAR), 2) > 2000, "bars not visible"
    for name, color in (("rate", LINE), ("live", LIVE)):
        rgb = np.array(hex_rgb(color))
        area = np.round(0.15 * rgb + 0.85 * 255)
        assert near(rgb, 100) > 50, f"{name} line ({color}) not visible"  # thin, antialiased
        assert near(area, 3) > 2000, f"{name} area under the line not visible"
    # the flame graphs (at the bottom): their boxes in warm colours, and, in the DOM Chromium
    # built, a known function's label drawn in them
    warm = ((pixels[:, :, 0] >= 205) & (pixels[:, :, 1] >= 80) & (pixels[:, :, 1] < 200)
            & (pixels[:, :, 2] >= 40) & (pixels[:, :, 2] < 90))
    assert int(warm[pixels.shape[0] // 2:].sum()) > 2000, "flame graph boxes not visible"
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         f"--user-data-dir={tmp_path / 'profile2'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-3000:]
    flames = dom.stdout.split('class="flamegraph"')
    assert len(flames) == 3 and ">function_" in flames[1], "no function label in the flame graph"
