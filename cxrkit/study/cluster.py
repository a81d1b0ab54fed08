"""Where a study's training notebooks run (``cxrkit study --executor``) and what each cluster job
asks the scheduler for: the study file's ``cluster:`` block (:class:`ClusterConfig`), checked
before anything runs like every other key. The jobs themselves: :mod:`cxrkit.study.jobs`.

``local`` runs the notebooks with papermill where the study runs; ``slurm`` submits each
``03_train`` step as one SLURM job through submitit; ``local-submitit`` runs the same jobs as local
processes through submitit's ``LocalExecutor`` (the tests; a dry run on a workstation). submitit
is optional (``pip install 'cxrkit[slurm]'``)::

    cluster:
      partition: gpu
      gpus_per_job: 1
      cpus_per_job: 8
      mem_gb: 64
      time_min: 240                      # each training job's time limit
      account: mylab
      setup: ["module load cuda/12.4"]   # shell lines run before each job
      sbatch: {constraint: a100}         # further sbatch options
"""

from __future__ import annotations

import difflib
import importlib.util
import shutil
from dataclasses import dataclass, field
from typing import Any

from cxrkit.utils.params import ConfigError

#: ``--executor`` name -> submitit's cluster (None: papermill in this process, today's runner)
EXECUTORS: dict[str, str | None] = {"local": None, "local-submitit": "local", "slurm": "slurm"}
EXTRA = "pip install 'cxrkit[slurm]'"
#: the keys of ``cluster:``: key -> (accepted types, description)
CLUSTER_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "partition": ((str,), "a partition name"),
    "account": ((str,), "an account name"),
    "qos": ((str,), "a quality of service name"),
    "gpus_per_job": ((int,), "0 or 1 (a training notebook trains in one process; several GPUs for one run: "
                             "torchrun, README 'Running on a cluster')"),
    "cpus_per_job": ((int,), "an integer >= 1 (also the notebook's torch threads)"),
    "mem_gb": ((int, float), "a number > 0 (GB per job)"),
    "time_min": ((int,), "an integer >= 1 (each training job's time limit in minutes)"),
    "setup": ((list,), "a list of shell lines run before each job (module load ..., source .venv/bin/activate)"),
    "sbatch": ((dict,), "a mapping of further sbatch options ({constraint: a100, exclude: node12})"),
    "python": ((str,), "the Python the jobs run (default: this one)"),
}
#: sbatch options that ``cluster:`` sets with its own keys (or that submitit sets): not in ``sbatch``
RESERVED_SBATCH = {"partition": "partition", "account": "account", "qos": "qos", "time": "time_min",
                   "gpus-per-node": "gpus_per_job", "gres": "gpus_per_job", "cpus-per-task": "cpus_per_job",
                   "mem": "mem_gb", "job-name": None, "output": None, "error": None, "nodes": None,
                   "ntasks-per-node": None, "signal": None, "open-mode": None, "array": None}


@dataclass(frozen=True)
class ClusterConfig:
    """A study's ``cluster:`` block: what each training job asks the scheduler for."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus_per_job: int = 1
    cpus_per_job: int | None = None
    mem_gb: float | None = None
    time_min: int | None = None
    setup: list = field(default_factory=list)
    sbatch: dict = field(default_factory=dict)
    python: str | None = None

    @classmethod
    def parse(cls, value: Any, where: str = "cluster") -> ClusterConfig:
        """Check a ``cluster:`` mapping: known keys, types, ranges, sbatch options not set twice.

        Raises:
            ConfigError: naming the key.
        """
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {sorted(CLUSTER_KEYS)}, got {value!r}")
        for key, val in value.items():
            if key not in CLUSTER_KEYS:
                close = difflib.get_close_matches(str(key), CLUSTER_KEYS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"{where}.{key}: unknown key{hint}; known: {sorted(CLUSTER_KEYS)}")
            types, what = CLUSTER_KEYS[key]
            if not isinstance(val, types) or isinstance(val, bool) or not _in_range(key, val):
                raise ConfigError(f"{where}.{key}: must be {what}, got {val!r}")
        for key, val in value.get("sbatch", {}).items():
            flag = str(key).replace("_", "-")
            if flag in RESERVED_SBATCH:
                own = RESERVED_SBATCH[flag]
                raise ConfigError(f"{where}.sbatch.{key}: " + (f"set it with {where}.{own}" if own else
                                                               "set by cxrkit (submitit)"))
            if not isinstance(val, (str, int, float)):
                raise ConfigError(f"{where}.sbatch.{key}: must be a string, a number or true, got {val!r}")
        return cls(**value)


def _in_range(key: str, value: Any) -> bool:
    """Whether a ``cluster:`` value of the right type is allowed."""
    if key == "gpus_per_job":
        return value in (0, 1)
    if key in ("cpus_per_job", "time_min"):
        return value >= 1
    if key == "mem_gb":
        return value > 0
    if key == "setup":
        return all(isinstance(line, str) for line in value)
    if isinstance(value, str):
        return bool(value.strip())
    return True


def check_executor(kind: str, cluster: dict | None) -> ClusterConfig | None:
    """Check ``--executor`` and what it needs before anything runs: a ``cluster:`` block with a
    time limit, submitit installed, and for ``slurm`` the ``sbatch`` command. None for ``local``.

    Raises:
        ConfigError: naming what is missing.
    """
    if kind not in EXECUTORS:
        raise ConfigError(f"executor: {kind!r} is not one of {list(EXECUTORS)}")
    if kind == "local":
        return None
    if cluster is None:
        raise ConfigError(f"--executor {kind}: the study file needs a 'cluster:' block (time_min, and partition, "
                          f"gpus_per_job, ... as the cluster needs; README 'Running on a cluster')")
    parsed = ClusterConfig.parse(cluster)
    if parsed.time_min is None:
        raise ConfigError(f"cluster.time_min: needed with --executor {kind} (each training job's time limit in "
                          f"minutes; submitit's default would end a training run after a few minutes)")
    if importlib.util.find_spec("submitit") is None:
        raise ConfigError(f"--executor {kind}: the submitit package is not installed; {EXTRA}")
    missing = [cmd for cmd in ("sbatch", "srun") if kind == "slurm" and shutil.which(cmd) is None]
    if missing:
        raise ConfigError(f"--executor slurm: {' and '.join(missing)} not on PATH; run cxrkit study where SLURM's "
                          f"commands are (a login node, or a job of its own)")
    return parsed
