"""Study steps as cluster jobs through submitit: ``--executor local-submitit`` takes the code path
of ``--executor slurm`` with submitit's LocalExecutor instead of SLURM's, so CI runs it without a
scheduler. The notebooks are the stand-in of the study tests (FakeNotebooks, pickled into the
jobs) except in one real end-to-end run; the sbatch script SLURM would get is checked as text."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import yaml
from study_helpers import fake_study, smoke_copy

from cxrkit.cli import main
from cxrkit.study import StudyError, load_study, plan, run_study
from cxrkit.study.cluster import ClusterConfig, check_executor
from cxrkit.study.jobs import make_executor
from cxrkit.utils.params import ConfigError

TESTS = Path(__file__).resolve().parent
#: a hang guard, not a timing: the tests wait on events (a job's log line, a process ending); this
#: bound only turns a hang into a failure, far above what the slowest machine takes
HANG_GUARD = 1800

CLUSTER = {"time_min": 10, "cpus_per_job": 1, "gpus_per_job": 0}


@pytest.fixture
def frozen_code(monkeypatch):
    """The package's code as the step keys see it, fixed for the test (so that an edit elsewhere in
    the working tree while a slow test runs does not change the keys it compares)."""
    from cxrkit.study import runner

    digest = runner._code_digest()
    monkeypatch.setattr(runner, "_code_digest", lambda: digest)


@pytest.fixture
def job_notebooks(tmp_path, monkeypatch, fake_notebooks, frozen_code):
    """The stand-in notebooks inside the jobs (the steps that run here use ``fake_notebooks``)."""
    from cluster_helpers import JobNotebooks

    from cxrkit.study import jobs

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    fake = JobNotebooks(tmp_path / "jobs.log")
    monkeypatch.setattr(jobs, "NOTEBOOK_EXECUTE", fake.execute)
    return fake


def _state(params: Path) -> dict:
    return json.loads((load_study(params).report_dir / "steps.json").read_text())


def test_training_notebooks_run_as_jobs_and_fill_the_report(tmp_path, fake_notebooks, job_notebooks, capsys):
    params = fake_study(tmp_path, variants=["none"], cluster=CLUSTER)
    run_study(params, executor="local-submitit")
    state = _state(params)
    train = sorted(n for n in state if n.startswith("03_train"))
    assert len(train) == 2 and all(e["status"] == "ok" for e in state.values())
    assert job_notebooks.ran_in_jobs() == train  # each training notebook ran in a job ...
    assert not any(n.startswith("03_train") for n in fake_notebooks.ran)  # ... and the other steps here
    assert {e["step"]: e["parameters"]["threads"] for e in job_notebooks.events_logged()} == dict.fromkeys(train, 1)
    for name in train:
        job = state[name]["job"]
        assert job["executor"] == "local-submitit" and Path(job["stdout"]).is_file() and job["host"]
    heads = json.loads((load_study(params).report_dir / "headlines.json").read_text())
    assert set(heads) == set(state)  # every step's headline, the jobs' too
    out = capsys.readouterr().out
    assert re.search(r"\[job \] 03_train_fold0_refinernone: job \d+ submitted \(local-submitit; log .*_0_log.out\)", out)
    # the step keys do not depend on where the steps ran: the local runner skips them all
    fake_notebooks.ran.clear()
    run_study(params, progress=False)
    assert fake_notebooks.ran == [] and len(job_notebooks.ran_in_jobs()) == 2


def test_cluster_block_and_tracking_do_not_change_the_step_keys(tmp_path, fake_notebooks, frozen_code):
    """Moving a study to a cluster, or turning tracking on, re-runs nothing; a training parameter
    still re-runs the study."""
    params = fake_study(tmp_path)
    run_study(params, progress=False)
    values = yaml.safe_load(params.read_text())
    values["cluster"] = CLUSTER
    values["train"]["tracking"] = {"tensorboard": True}
    params.write_text(yaml.safe_dump(values))
    fake_notebooks.ran.clear()
    run_study(params, progress=False)
    assert fake_notebooks.ran == []
    values["train"]["epochs"] = 2
    params.write_text(yaml.safe_dump(values))
    run_study(params, progress=False)
    assert fake_notebooks.ran == list(_state(params))  # every step, as for any change of the study file


def test_failed_jobs_name_the_cell_and_the_logs_and_rerun_alone(tmp_path, fake_notebooks, job_notebooks):
    params = fake_study(tmp_path, variants=["none"], n_folds=3, cluster=CLUSTER)
    job_notebooks.fail, job_notebooks.crash = "03_train_fold1_refinernone", "03_train_fold2_refinernone"
    with pytest.raises(StudyError) as info:
        run_study(params, progress=False, executor="local-submitit", jobs=2)
    assert re.search(r"03_train.ipynb \{.*'fold': 1, 'refiner': 'none'\} failed in cell 3: ValueError: boom "
                     r"\(partial notebook: .*03_train_fold1_refinernone.ipynb; job \d+ on .*; "
                     r"logs: .*_0_log.out, .*_0_log.err\)", str(info.value)), str(info.value)
    state = _state(params)
    assert state["03_train_fold1_refinernone"]["status"] == "failed"
    assert state["03_train_fold1_refinernone"]["error"] == "cell 3: ValueError: boom"
    assert state["03_train_fold2_refinernone"]["status"] == "failed"
    assert re.fullmatch(r"job \d+: RuntimeError: kernel died", state["03_train_fold2_refinernone"]["error"])
    assert state["03_train_fold0_refinernone"]["status"] == "ok"  # the other job of the group went on
    after = [st.name for st in plan(load_study(params), str(params)) if st.notebook > "03_train"]
    assert not set(after) & set(state)  # the steps after the training notebooks did not run
    # fixed and run again: only the failed jobs (and the steps after them) run
    job_notebooks.fail = job_notebooks.crash = None
    job_notebooks.log.unlink()
    fake_notebooks.ran.clear()
    run_study(params, progress=False, executor="local-submitit")
    assert job_notebooks.ran_in_jobs() == ["03_train_fold1_refinernone", "03_train_fold2_refinernone"]
    assert fake_notebooks.ran == after  # whatever steps follow the training notebooks
    assert all(e["status"] == "ok" for e in _state(params).values())


def test_an_interrupted_study_cancels_its_jobs(tmp_path, fake_notebooks, job_notebooks, monkeypatch):
    import concurrent.futures

    params = fake_study(tmp_path, variants=["none"], cluster=CLUSTER)
    job_notebooks.block = "03_train_fold1_refinernone"
    real_wait = concurrent.futures.wait

    def interrupted_wait(futures, *args, **kwargs):  # Ctrl-C once the blocking job has started
        t0 = time.monotonic()
        while not any(e["step"] == job_notebooks.block for e in job_notebooks.events_logged()):
            assert time.monotonic() - t0 < HANG_GUARD, "the job never started"
            real_wait(futures, timeout=0.05)
        raise KeyboardInterrupt

    monkeypatch.setattr(concurrent.futures, "wait", interrupted_wait)
    with pytest.raises(KeyboardInterrupt):
        run_study(params, progress=False, executor="local-submitit")
    assert _state(params)["03_train_fold1_refinernone"]["status"] == "interrupted"
    pid = next(e["pid"] for e in job_notebooks.events_logged() if e["step"] == job_notebooks.block)
    t0 = time.monotonic()
    while _alive(pid):  # the cancelled job's process ends
        assert time.monotonic() - t0 < HANG_GUARD, "the cancelled job is still running"
        time.sleep(0.05)
    assert "03_train_fold1_refinernone" not in job_notebooks.ran_in_jobs()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").is_file() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.mark.parametrize("cluster,match", [
    ({"partiton": "gpu"}, r"cluster.partiton: unknown key \(did you mean 'partition'\?\)"),
    ({"gpus_per_job": 2}, r"cluster.gpus_per_job: must be 0 or 1 .*torchrun"),
    ({"time_min": "4:00:00"}, r"cluster.time_min: must be an integer >= 1 \(each training job's time limit"),
    ({"time_min": 0}, "cluster.time_min: must be an integer >= 1"),
    ({"mem_gb": -1}, "cluster.mem_gb: must be a number > 0"),
    ({"cpus_per_job": True}, "cluster.cpus_per_job: must be an integer >= 1"),
    ({"setup": "module load cuda"}, "cluster.setup: must be a list of shell lines"),
    ({"sbatch": {"partition": "gpu"}}, "cluster.sbatch.partition: set it with cluster.partition"),
    ({"sbatch": {"cpus_per_task": 4}}, "cluster.sbatch.cpus_per_task: set it with cluster.cpus_per_job"),
    ({"sbatch": {"output": "x.log"}}, r"cluster.sbatch.output: set by cxrkit \(submitit\)"),
    ({"sbatch": {"constraint": ["a100"]}}, "cluster.sbatch.constraint: must be a string, a number or true"),
    ("gpu", "parameter 'cluster' must be dict"),
])
def test_bad_cluster_block_fails_before_anything_runs(tmp_path, cluster, match):
    params = fake_study(tmp_path, cluster=cluster)
    with pytest.raises(ConfigError, match=match):
        run_study(params, progress=False)
    assert not (tmp_path / "reports").exists() and not (tmp_path / "runs").exists()


def test_executor_needs_its_block_time_limit_package_and_commands(tmp_path, monkeypatch, capsys):
    import importlib.util
    import shutil

    with pytest.raises(ConfigError, match="executor: 'slurn' is not one of"):
        check_executor("slurn", CLUSTER)
    assert check_executor("local", None) is None
    with pytest.raises(ConfigError, match="--executor slurm: the study file needs a 'cluster:' block"):
        check_executor("slurm", None)
    with pytest.raises(ConfigError, match="cluster.time_min: needed with --executor local-submitit"):
        check_executor("local-submitit", {"partition": "gpu"})
    monkeypatch.setattr(shutil, "which", lambda cmd: None)
    with pytest.raises(ConfigError, match="--executor slurm: sbatch and srun not on PATH"):
        check_executor("slurm", CLUSTER)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "submitit" else real(name, *a))
    with pytest.raises(ConfigError, match=r"the submitit package is not installed; pip install 'cxrkit\[slurm\]'"):
        check_executor("local-submitit", CLUSTER)
    # through the command line: one line, status 2, nothing written
    params = fake_study(tmp_path)
    assert main(["study", "-f", str(params), "--executor", "slurm"]) == 2
    assert "cxrkit study: error: --executor slurm: the study file needs a 'cluster:' block" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()


def _fake_slurm(tmp_path: Path, monkeypatch) -> None:
    """``sbatch`` and ``srun`` on PATH that refuse every job as an unknown partition."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for cmd in ("srun", "sbatch"):
        (bin_dir / cmd).write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified: gpux' >&2\nexit 1\n")
        (bin_dir / cmd).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_a_job_the_scheduler_refuses_is_named(tmp_path, monkeypatch, fake_notebooks, frozen_code):
    """``--executor slurm`` up to sbatch, which refuses the job: the step fails saying why."""
    _fake_slurm(tmp_path, monkeypatch)
    params = fake_study(tmp_path, variants=["none"], cluster={**CLUSTER, "partition": "gpux"})
    with pytest.raises(StudyError, match=r"03_train.ipynb .* failed in submission: .*invalid partition specified"):
        run_study(params, progress=False, executor="slurm", jobs=1)
    entry = _state(params)["03_train_fold0_refinernone"]
    assert entry["status"] == "failed" and entry["error"].startswith("submission: ")


def test_sbatch_script_carries_the_cluster_block(tmp_path, monkeypatch):
    """What SLURM would get (submitit's sbatch text; no scheduler needed, srun faked on PATH)."""
    _fake_slurm(tmp_path, monkeypatch)
    cluster = check_executor("slurm", {
        "partition": "gpu", "account": "mylab", "qos": "normal", "gpus_per_job": 1, "cpus_per_job": 8, "mem_gb": 64,
        "time_min": 240, "setup": ["module load cuda/12.4", "source .venv/bin/activate"],
        "sbatch": {"constraint": "a100", "exclusive": True}, "python": "/opt/venv/bin/python"})
    assert isinstance(cluster, ClusterConfig)
    executor = make_executor("slurm", cluster, tmp_path / "jobs", "smoke:03_train_fold0_refinernone")
    text = executor._executor._make_submission_file_text("CMD", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=mylab", "#SBATCH --qos=normal",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64GB", "#SBATCH --time=240",
                 "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --constraint=a100",
                 "#SBATCH --exclusive", "#SBATCH --job-name=smoke:03_train_fold0_refinernone",
                 f"#SBATCH --output={tmp_path}/jobs/%j/%j_0_log.out", "module load cuda/12.4",
                 "source .venv/bin/activate"):
        assert line in text.splitlines(), line
    assert executor._executor._submitit_command_str.startswith("/opt/venv/bin/python -u -m submitit.core._submit")


@pytest.mark.slow
def test_smoke_study_through_submitit_end_to_end(tmp_path, capsys, frozen_code):
    """The real notebooks: 01 and 02 here, two training notebooks as submitit jobs (one thread
    each), then a re-run with the local runner skips every step."""
    params = smoke_copy(tmp_path, n_folds=2, variants=["none"], cluster=CLUSTER)
    run_study(params, only=["01", "02", "03"], executor="local-submitit")
    cfg = load_study(params)
    state = _state(params)
    assert list(state) == ["01_explore", "02_folds", "03_train_fold0_refinernone", "03_train_fold1_refinernone"]
    assert all(e["status"] == "ok" for e in state.values()), state
    heads = json.loads((cfg.report_dir / "headlines.json").read_text())
    for fold in (0, 1):
        name = f"03_train_fold{fold}_refinernone"
        assert (cfg.report_dir / "notebooks" / f"{name}.html").is_file()
        assert 0 <= heads[name]["val_macro_auc_tta"] <= 1
        prov = json.loads((cfg.train_dir(fold, "none") / "provenance.json").read_text())
        assert prov["host"]["torch_threads"] == 1  # cpus_per_job
        assert "Executing" in Path(state[name]["job"]["stdout"]).read_text()  # papermill's log, in the job's
    assert "job" not in state["01_explore"]  # the other steps ran here
    capsys.readouterr()
    run_study(params, only=["01", "02", "03"], progress=True)  # the local runner: same keys, nothing to run
    assert capsys.readouterr().out.count("[skip]") == 4
