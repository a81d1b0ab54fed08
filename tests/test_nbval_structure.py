"""The notebook regression tests compare structure, never number-dependent layout
(tests/nbval_structure.py): unit checks of the reduction and nbval runs on small notebooks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbval_structure import structure, table_structure

ROOT = Path(__file__).resolve().parents[1]
SANITIZE = ROOT / "notebooks" / "nbval_sanitize.cfg"


def _result(obj) -> nbformat.NotebookNode:
    """The execute_result output IPython makes for ``obj``."""
    from IPython.core.formatters import DisplayFormatter

    data, _ = DisplayFormatter().format(obj)
    return nbformat.v4.new_output("execute_result", data=data, execution_count=1)


def _sanitized(output: nbformat.NotebookNode) -> dict:
    """structure() then the project's regex sanitizers, as nbval applies them."""
    import re

    from nbval.plugin import get_sanitize_patterns

    patterns = get_sanitize_patterns(SANITIZE.read_text())
    out = structure(output)
    data = dict(out.get("data", {}))
    for mime, value in data.items():
        for regex, replace in patterns:
            value = re.sub(regex, replace, value)
        data[mime] = value
    return data


def test_a_table_whose_number_changes_width_or_sign_has_the_same_structure():
    a = _sanitized(_result(pd.DataFrame({"delta": [0.0123]})))
    b = _sanitized(_result(pd.DataFrame({"delta": [-0.0123]})))
    assert a == b and set(a) == {"text/html"}  # the padded text/plain is not compared
    assert a["text/html"].splitlines() == ["<table>", " | delta", "0 | ."]


def test_a_wide_table_wraps_differently_but_keeps_its_structure():
    wide = {f"column {i}": [0.5, 0.25] for i in range(12)}
    other = {k: [-v[0] * 1e-7, v[1] * 1234.5] for k, v in wide.items()}
    with pd.option_context("display.max_columns", None, "display.width", 80):
        a, b = _result(pd.DataFrame(wide)), _result(pd.DataFrame(other))
    plain = [re.sub(r"[-+]?\d+\.\d+(e[-+]\d+)?", "FLOAT", o.data["text/plain"]) for o in (a, b)]
    assert plain[0].count("\\") != plain[1].count("\\")  # wrapped into another number of blocks
    assert _sanitized(a) == _sanitized(b)


@pytest.mark.parametrize("other", [
    pd.DataFrame({"gamma": [0.0123]}),  # another column
    pd.DataFrame({"delta": [0.0123]}, index=["fold 1"]),  # another row label
    pd.DataFrame({"delta": [0.0123, 0.1]}),  # another row
])
def test_another_column_row_or_label_is_a_difference(other):
    assert _sanitized(_result(pd.DataFrame({"delta": [0.0123]}))) != _sanitized(_result(other))


def test_multiindex_headers_and_row_labels_are_structure():
    cols = pd.MultiIndex.from_tuples([("fold 0", "n"), ("fold 0", "frac")], names=["part", ""])
    df = pd.DataFrame([[10, 0.5], [3, 0.25]], index=["images", "Atelectasis"], columns=cols)
    lines = table_structure(df.to_html()).splitlines()
    assert lines[0] == "<table>" and "fold 0" in lines[1] and "frac" in lines[2]
    assert lines[-2:] == ["images | . | .", "Atelectasis | . | ."]


def test_text_padding_and_numbers_do_not_count():
    s1 = _result(pd.Series({"Atelectasis": 0.0123, "Edema": 0.5}, name="auc"))
    s2 = _result(pd.Series({"Atelectasis": -0.0123, "Edema": 0.5}, name="auc"))
    assert _sanitized(s1) == _sanitized(s2)
    stream = nbformat.v4.new_output("stream", name="stdout", text="fold 0:   AUC  0.91\n")
    assert structure(stream)["text"] == "fold 0: AUC 0.91\n"


def _notebook(path: Path, code: str, reference_from: str) -> Path:
    """A one-cell notebook running ``code`` whose stored output is that of ``reference_from``."""
    cell = nbformat.v4.new_code_cell(code, execution_count=1)
    namespace: dict = {}
    exec("import pandas as pd", namespace)
    cell.outputs = [_result(eval(reference_from, namespace))]
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def _nbval(notebook: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "-p", "nbval_structure", "--nbval", "--nbval-current-env",
                           f"--nbval-sanitize-with={SANITIZE}", "--rootdir", str(notebook.parent), str(notebook)],
                          cwd=notebook.parent, capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_nbval_with_the_plugin_passes_a_sign_change_and_fails_a_renamed_column(tmp_path):
    """The issue's minimal case through nbval itself: a cell showing pd.DataFrame({"delta": [0.0123]})
    re-run with -0.0123 passes; the same cell with a renamed column fails."""
    sign = _notebook(tmp_path / "sign.ipynb", "import pandas as pd\npd.DataFrame({'delta': [-0.0123]})",
                     "pd.DataFrame({'delta': [0.0123]})")
    res = _nbval(sign)
    assert res.returncode == 0, res.stdout[-3000:]
    renamed = _notebook(tmp_path / "renamed.ipynb", "import pandas as pd\npd.DataFrame({'gamma': [0.0123]})",
                        "pd.DataFrame({'delta': [0.0123]})")
    res = _nbval(renamed)
    assert res.returncode == 1 and "Cell outputs differ" in res.stdout, res.stdout[-3000:]


def test_notebook_kernels_run_with_another_thread_count_than_the_references():
    """A process started from this session (as nbval's kernels are) has torch use TEST_THREADS
    threads, and `make notebooks` makes the references with REFERENCE_THREADS."""
    import nbval_structure

    child = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                           capture_output=True, text=True, check=True)
    assert int(child.stdout) == int(nbval_structure.TEST_THREADS) != int(nbval_structure.REFERENCE_THREADS)
    makefile = (ROOT / "Makefile").read_text()
    assert f"OMP_NUM_THREADS={nbval_structure.REFERENCE_THREADS}" in makefile.split("\nnotebooks:")[1].split("\n\n")[0]


def test_the_notebook_session_starts_without_the_smoke_runs(tmp_path):
    """nbval sessions remove runs/smoke and reports/smoke first (the notebooks then retrain with
    the test thread count); sessions that do not run the notebooks leave them alone."""
    import nbval_structure

    class Config:  # what _runs_notebooks reads of a pytest.Config
        rootpath = ROOT
        invocation_params = type("P", (), {"dir": ROOT})()

        def __init__(self, args):
            self.args = args

    assert nbval_structure._runs_notebooks(Config(["tests", "notebooks"]))
    assert nbval_structure._runs_notebooks(Config(["notebooks/03_train.ipynb::Cell 2"]))
    assert nbval_structure._runs_notebooks(Config([str(ROOT)]))
    assert not nbval_structure._runs_notebooks(Config(["tests/test_metrics.py"]))
    assert nbval_structure.SMOKE_OUTPUTS == ("runs/smoke", "reports/smoke")  # where params/smoke.yaml writes
    import yaml

    smoke = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    assert smoke["name"] == "smoke" and smoke.get("runs", "runs") == "runs" and smoke.get("reports", "reports") == "reports"
