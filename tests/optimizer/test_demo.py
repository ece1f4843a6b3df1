"""The optimizer demo runs end to end and prints its table and verdicts (its figures are measured
in docs/optimizer.md; here, only that every part of it works, on short runs)."""
import os
import re
import subprocess
import sys

DEMO = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "performance_optimization_demo.py")


def test_demo_prints_before_and_after_rows_with_noise_and_verdicts():
    result = subprocess.run([sys.executable, DEMO, "--seconds", "0.6", "--rounds", "2", "--only", "game_loop"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| game_loop |")]
    # (an "after + accuracy" row only when a recommendation spends CPU on accuracy)
    assert [r[1] for r in rows] in (["before", "after"], ["before", "after", "after + accuracy"]), out[-3000:]
    after = rows[1]
    assert "(±" in after[-1], after  # the measured change with the noise of two rounds
    assert "game_loop: CPU overhead after" in out and "count errors: largest RMS over rounds" in out, out[-2000:]
    # Each tracked run is compared with untracked runs of its own length (two export intervals and
    # 0.25 s at least): the game loop's CPU per frame depends on how long it has run.
    [lengths] = re.findall(r"untracked CPU per frame, lowest and median of the rounds: (.*)", out)
    expected = {2 * 0.5 + 0.25}
    longer = re.search(r"export_interval: 500 -> (\d+)", out)
    if longer:
        expected.add(2 * int(longer.group(1)) / 1000 + 0.25)
    assert {float(x) for x in re.findall(r"([\d.]+) s runs", lengths)} == expected, (lengths, expected)
