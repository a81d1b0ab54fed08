"""What ``cxrkit study`` shows in the terminal: overall progress with an estimate of the time left,
and the notebook kernels' stderr without their routine noise (cxrkit/study/terminal.py)."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys

from study_helpers import fake_study as _fake_study

from cxrkit.study import run_study
from cxrkit.study.terminal import (
    KernelNoiseFilter,
    StudyProgress,
    forward_stderr,
    quiet_kernel_manager,
)

TCP_WARNING = ("[IPKernelApp] WARNING | Kernel is running over TCP without encryption. All communication "
               "(including code and outputs) is sent in plain text and is susceptible to eavesdropping.")


def test_study_prints_steps_done_of_total_elapsed_and_time_left(tmp_path, fake_notebooks, capsys, monkeypatch):
    seen: dict = {}
    real = fake_notebooks.execute

    def execute(input_path, output_path, parameters, **kwargs):
        seen.update(kwargs)
        return real(input_path, output_path, parameters, **kwargs)

    monkeypatch.setattr("papermill.execute_notebook", execute)
    params = _fake_study(tmp_path, variants=["none", "sparse"])  # 2 + 2 folds x 2 variants + the others
    n = len(run_study(params)["steps"])
    lines = capsys.readouterr().out.splitlines()
    assert n >= 10 and f"{n} of {n} steps to run" in lines[0]
    runs = [ln for ln in lines if ln.startswith("[run ]")]
    assert [ln.split()[2] for ln in runs][:2] == ["01_explore", "02_folds"]  # the format tests parse is kept
    assert [re.search(rf"\(step (\d+)/{n}\)$", ln).group(1) for ln in runs] == [str(i) for i in range(1, n + 1)]
    done = [re.search(rf"(\d+)/{n} steps done, \d+ s elapsed", ln) for ln in lines if " done in " in ln]
    assert [int(m.group(1)) for m in done] == list(range(1, n + 1))
    assert sum("left" in ln for ln in lines if " done in " in ln) == n - 1  # every step but the last has an estimate
    assert seen["kernel_manager_class"] is quiet_kernel_manager()  # the kernels' stderr is filtered

    run_study(params)  # nothing to run: no progress lines that look like steps
    out = capsys.readouterr().out
    assert f"0 of {n} steps to run" in out and "[run ]" not in out and out.count("[skip]") == n


def test_time_left_from_the_finished_steps_of_each_kind():
    now = [0.0]
    progress = StudyProgress(["01_explore", "02_folds"] + ["03_train"] * 4 + ["04_coupling"], jobs=2,
                             clock=lambda: now[0])
    assert progress.eta() is None  # nothing finished: no estimate
    progress.begin()
    now[0] = 10.0
    assert progress.end("01_explore", 10.0) == "1/7 steps done, 10 s elapsed, about 40 s left"  # 2 x 10 s + 2 rounds x 10 s
    progress.end("02_folds", 20.0)
    progress.end("03_train", 100.0)
    # left: 3 training steps at 100 s on 2 jobs (2 rounds) + 04_coupling at the others' mean, 15 s
    assert progress.eta() == 2 * 100.0 + 15.0
    for _ in range(3):
        progress.end("03_train", 100.0)
    now[0] = 4000.0
    assert progress.end("04_coupling", 5.0) == "7/7 steps done, 1 h 06 min elapsed"


def test_noise_filter_drops_the_kernel_noise_and_keeps_errors():
    noise = logging.makeLogRecord({"name": "traitlets", "levelno": logging.WARNING, "msg": TCP_WARNING})
    interrupt = logging.makeLogRecord({"levelno": logging.ERROR, "msg": "KeyboardInterrupt caught in kernel"})
    error = logging.makeLogRecord({"levelno": logging.ERROR, "msg": "Kernel died before replying to kernel_info"})
    f = KernelNoiseFilter()
    assert not f.filter(noise) and not f.filter(interrupt)
    assert f.filter(error)


def test_kernel_stderr_is_forwarded_without_the_noise():
    """A real process's stderr through the pipe the kernel manager reads."""
    code = (f"import sys; e = sys.stderr; e.write({TCP_WARNING!r} + '\\n'); "
            "e.write('KeyboardInterrupt caught in kernel\\n'); "
            "e.write('Traceback (most recent call last):\\nValueError: real error\\n')")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    sink = io.StringIO()
    forward_stderr(proc.stderr, sink.write)
    proc.wait()
    assert sink.getvalue() == "Traceback (most recent call last):\nValueError: real error\n"
