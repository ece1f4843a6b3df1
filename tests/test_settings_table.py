"""The README's settings table is the one the code generates."""
import pathlib
import subprocess
import sys

import pytest

from memscope_otel.config import README_BEGIN, README_END, SETTINGS, markdown_table, replace_readme_block

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
REGENERATE = "python -m memscope_otel.config --readme README.md"


def test_readme_table_matches_the_code():
    text = README.read_text(encoding="utf-8")
    assert text.count(README_BEGIN) == 1 and text.count(README_END) == 1, (
        f"README.md needs exactly one {README_BEGIN} ... {README_END} block")
    assert text == replace_readme_block(text), (
        f"the settings table in README.md differs from the code; regenerate it with: {REGENERATE}")


def test_table_has_one_row_per_setting_and_five_columns():
    lines = markdown_table().splitlines()
    assert len(lines) == 2 + len(SETTINGS)
    for line, setting in zip(lines[2:], SETTINGS):
        cells = [cell.strip() for cell in _split_row(line)]
        assert len(cells) == 5, line
        assert cells[0] == f"`{setting.env_var}`"
        assert cells[1] == f"`{setting.keyword}` / `{setting.flag}`"
        assert cells[3] == setting.accepted
        assert cells[4] == setting.meaning


def _split_row(line):
    """The cells of a Markdown table row, honouring escaped pipes."""
    assert line.startswith("| ") and line.endswith(" |")
    cells, cell, chars = [], "", iter(line[1:-1])
    for char in chars:
        if char == "\\":
            cell += char + next(chars)
        elif char == "|":
            cells.append(cell)
            cell = ""
        else:
            cell += char
    return cells + [cell]


def test_replace_is_idempotent_and_keeps_the_rest():
    text = f"before\n{README_BEGIN}\nold table\n{README_END}\nafter\n"
    once = replace_readme_block(text)
    assert once == replace_readme_block(once)
    assert once.startswith(f"before\n{README_BEGIN}\n") and once.endswith(f"{README_END}\nafter\n")
    assert "old table" not in once and markdown_table() in once


def test_replace_without_markers_is_an_error():
    with pytest.raises(ValueError, match="settings-table"):
        replace_readme_block("no markers here\n")


def test_module_prints_the_table():
    result = subprocess.run([sys.executable, "-m", "memscope_otel.config"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == markdown_table()


def test_module_rewrites_a_readme(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{README_BEGIN}\nstale\n{README_END}\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "memscope_otel.config", "--readme", str(readme)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert readme.read_text(encoding="utf-8") == replace_readme_block(f"# x\n{README_BEGIN}\n{README_END}\n")
