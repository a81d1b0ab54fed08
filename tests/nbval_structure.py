"""pytest plugin: the notebook regression tests compare the *structure* of every output.

nbval (the design card's notebook tester) re-executes the committed notebooks and compares each
cell's outputs with the stored ones, as text, after the regex sanitizers of
``notebooks/nbval_sanitize.cfg`` (numbers -> ``FLOAT``, paths, progress bars). Text alone is not
enough: pandas pads a DataFrame's ``text/plain`` columns to the widest value and wraps wide frames
at 80 characters, so when a trained number changes width or sign on another CPU (its last bits
differ), the layout shifts and the comparison fails although nothing changed. So before nbval
compares, every output is reduced to its structure:

* a rich output holding an HTML table (a DataFrame) keeps only the table's structure: for every
  row of the header and of the body, the header cells' text (column names, row labels) and a
  ``.`` per value cell. Its ``text/plain`` is dropped. Cell values are not compared here: they
  are checked where they can be exact, by the unit tests of the analyses;
* any other text (``print`` output, a Series' ``text/plain``, a figure's repr) has its runs of
  spaces collapsed to one, so padding that depends on a value's width never counts.

It also makes the fragility of a float-dependent comparison visible on one machine: the test
session, and so the notebook kernels, run with one torch thread (``OMP_NUM_THREADS=1``) while
``make notebooks`` makes the reference outputs with two; the thread count changes the order of
floating-point reductions and so the last bits of every trained number, as another CPU does. The
smoke study's runs are removed first, so the notebooks retrain them with one thread.

Own code with a reason: nbval offers regex sanitizers and per-cell skips, not a structural
comparison. This wraps ``nbval.plugin.IPyNbCell.compare_outputs`` (nbval is pinned to 0.11.x in
``pyproject.toml``; ``tests/test_nbval_structure.py`` fails if the hook stops working).
Registered with ``-p nbval_structure`` in ``pyproject.toml``.
"""

from __future__ import annotations

import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

#: Thread count of the kernels under test; ``make notebooks`` uses REFERENCE_THREADS.
TEST_THREADS = "1"
REFERENCE_THREADS = "2"

_SPACES = re.compile(r"[ \t]+")


class _TableStructure(HTMLParser):
    """Collects, for every ``<tr>`` of every ``<table>``, its header cells' text and a ``.`` per
    value cell (``<td>``)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self._cell: str | None = None  # "th" or "td" while inside a cell
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.rows.append(["<table>"])
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("th", "td"):
            self._cell, self._text = tag, []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td") and self._cell == tag:
            text = _SPACES.sub(" ", "".join(self._text)).strip()
            self.rows[-1].append(text if tag == "th" else ".")
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._text.append(data)


def table_structure(html: str) -> str:
    """The structure of the HTML tables in ``html``: one line per row, header cells' text and
    ``.`` for each value cell, ``|``-separated; a ``<table>`` line starts each table."""
    parser = _TableStructure()
    parser.feed(html)
    parser.close()
    return "\n".join(" | ".join(row) for row in parser.rows) + "\n"


def _text(value: Any) -> Any:
    return _SPACES.sub(" ", value) if isinstance(value, str) else value


def structure(output: dict[str, Any]) -> Any:
    """One notebook output (stream, display_data or execute_result) reduced to its structure."""
    import nbformat

    out = dict(output)
    data = output.get("data")
    if isinstance(data, dict):
        data = {mime: _text(value) for mime, value in data.items()}
        html = data.get("text/html")
        if isinstance(html, str) and "<table" in html:
            data["text/html"] = table_structure(html)
            data.pop("text/plain", None)
        out["data"] = data
    if "text" in output:  # a stream
        out["text"] = _text(output["text"])
    return nbformat.from_dict(out)


def _patch_nbval() -> None:
    from nbval.plugin import IPyNbCell

    original = IPyNbCell.compare_outputs
    if getattr(original, "_cxrkit_structure", False):
        return

    def compare_outputs(self: Any, test: list, ref: list, skip_compare: Any = None) -> bool:
        return original(self, [structure(o) for o in test], [structure(o) for o in ref], skip_compare)

    compare_outputs._cxrkit_structure = True  # type: ignore[attr-defined]
    IPyNbCell.compare_outputs = compare_outputs


#: The smoke study's outputs in the checkout, which the committed notebooks write (params/smoke.yaml).
SMOKE_OUTPUTS = ("runs/smoke", "reports/smoke")


def _runs_notebooks(config: pytest.Config) -> bool:
    """Whether this session collects the committed notebooks (by default it does: testpaths)."""
    root = Path(str(config.rootpath)).resolve()
    for arg in config.args:
        path = (Path(str(config.invocation_params.dir)) / arg.split("::")[0]).resolve()
        if path.suffix == ".ipynb" or path == root or root / "notebooks" in (path, *path.parents):
            return True
    return False


def pytest_configure(config: pytest.Config) -> None:
    """Patch nbval's comparison; give the whole session, hence the notebook kernels it starts
    (they inherit its environment), another thread count than the reference outputs; and, when
    the notebooks are tested, remove the smoke study's runs and report from the checkout first, so
    that the notebooks retrain them with that thread count instead of reusing runs trained by
    ``make notebooks`` (or by older code). Only the controlling process removes them."""
    _patch_nbval()
    os.environ["OMP_NUM_THREADS"] = TEST_THREADS
    os.environ["MKL_NUM_THREADS"] = TEST_THREADS
    if not hasattr(config, "workerinput") and _runs_notebooks(config):
        for rel in SMOKE_OUTPUTS:
            shutil.rmtree(Path(str(config.rootpath)) / rel, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep every notebook cell on one pytest-xdist worker, in order: the cells of a notebook
    share one kernel, and the notebooks share the smoke study's data and runs in the checkout."""
    for item in items:
        if type(item).__name__ == "IPyNbCell":
            item.add_marker(pytest.mark.xdist_group("notebooks"))
