"""Where work runs: local processes, or Dask (a local cluster, a scheduler address, SLURM).

One :class:`ExecutorSpec` says it for every command that hands out embarrassingly parallel
tasks (sweep tasks, one structure's DFT labelling, one search seed), and
:func:`open_executor` turns it into a ``concurrent.futures.Executor``:

* ``local`` (the default): ``workers`` local processes;
* ``dask`` with ``scheduler``: an existing Dask scheduler (``tcp://host:port``);
* ``dask`` alone: a ``distributed.LocalCluster`` of ``workers`` single-threaded processes;
* ``dask`` with ``cluster="slurm"``: a ``dask_jobqueue.SLURMCluster`` built from a TOML file
  (:class:`SlurmConfig`) and scaled to ``workers`` SLURM jobs.

Dask is the engine: a task whose worker dies is rescheduled on another worker by the
scheduler (up to ``distributed.scheduler.allowed-failures`` times).  Tasks that use several
cores (a DFT labelling with MPI ranks) ask for them as the Dask worker resource ``cores``;
the local and SLURM clusters opened here start their workers with that resource.
Imports of ``distributed`` and ``dask_jobqueue`` happen only when a Dask executor is opened.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import tomllib
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

EXECUTORS = ("local", "dask")
CLUSTERS = ("slurm",)
#: the Dask worker resource a multi-core task asks for
CORES = "cores"
#: how long to try reaching a --scheduler address
CONNECT_TIMEOUT = "20s"
_WALLTIME = re.compile(r"^(\d+-)?\d{1,3}:\d{2}(:\d{2})?$")
_MEMORY = re.compile(r"^\s*\d+(\.\d+)?\s*([kKmMgGtT]i?[bB]?|[bB])?\s*$")


class ExecutorError(ValueError):
    """An executor cannot be opened as specified (a user error: printed, exit 2)."""


@dataclass(frozen=True)
class SlurmConfig:
    """A SLURM cluster for Dask workers: one ``[slurm]`` table of a TOML file.

    ``cores``, ``memory`` and ``walltime`` are per SLURM job; each job runs ``processes``
    Dask workers of ``cores // processes`` threads each.  ``prologue`` lines run in the job
    script before the worker starts (``module load ...``, ``export UIPBENCH_ENVS_DIR=...``);
    ``python`` is the interpreter of the workers (default: the driver's own).
    """

    queue: str
    cores: int
    memory: str
    walltime: str
    prologue: tuple[str, ...] = ()
    python: str | None = None
    account: str | None = None
    processes: int = 1
    job_directives: tuple[str, ...] = ()
    interface: str | None = None
    scheduler_host: str | None = None
    local_directory: str | None = None
    log_directory: str | None = None
    path: Path | None = field(default=None, compare=False)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "SlurmConfig":
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ExecutorError(f"cannot read the cluster config {path}: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ExecutorError(f"{path}: not a valid TOML file ({exc})") from None
        table = data.get("slurm")
        if not isinstance(table, dict):
            raise ExecutorError(f"{path}: no [slurm] table (see docs/slurm.example.toml)")
        return cls.from_dict(table, path)

    @classmethod
    def from_dict(cls, table: dict[str, Any], path: Path | None = None) -> "SlurmConfig":
        where = f"{path}: " if path else ""
        known = {f.name for f in fields(cls)} - {"path"}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ExecutorError(f"{where}unknown field(s) {unknown} in [slurm]; known: {sorted(known)}")
        missing = [k for k in ("queue", "cores", "memory", "walltime") if k not in table]
        if missing:
            raise ExecutorError(f"{where}[slurm] needs the field(s) {missing}")
        values = {k: _checked(k, v, where) for k, v in table.items()}
        config = cls(**values, path=path)
        if config.cores % config.processes:
            raise ExecutorError(f"{where}field 'cores' ({config.cores}) must be a multiple of "
                                f"'processes' ({config.processes})")
        return config

    @property
    def cores_per_worker(self) -> int:
        return self.cores // self.processes

    def cluster_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``dask_jobqueue.SLURMCluster`` for this config."""
        kwargs: dict[str, Any] = dict(
            queue=self.queue, cores=self.cores, memory=self.memory, walltime=self.walltime,
            processes=self.processes, job_script_prologue=list(self.prologue),
            job_extra_directives=list(self.job_directives),
            worker_extra_args=["--resources", f"{CORES}={self.cores_per_worker}"],
        )
        optional = dict(python=self.python, account=self.account, interface=self.interface,
                        local_directory=self.local_directory, log_directory=self.log_directory)
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        scheduler: dict[str, Any] = {"dashboard_address": None}
        if self.scheduler_host:
            scheduler["host"] = self.scheduler_host
        kwargs["scheduler_options"] = scheduler
        return kwargs


def _checked(name: str, value: Any, where: str) -> Any:
    """One [slurm] field, type-checked; a wrong one is an error naming the file and the field."""
    def bad(expected: str) -> ExecutorError:
        return ExecutorError(f"{where}field '{name}' must be {expected}, got {value!r}")

    if name in ("cores", "processes"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad("a positive integer")
        return value
    if name in ("prologue", "job_directives"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return tuple(value)
    if not isinstance(value, str) or not value.strip():
        raise bad("a non-empty string")
    if name == "walltime" and not _WALLTIME.match(value):
        raise bad("a SLURM time such as '02:00:00' or '1-12:00:00'")
    if name == "memory" and not _MEMORY.match(value):
        raise bad("a size such as '16GB'")
    return value


@dataclass(frozen=True)
class ExecutorSpec:
    """Where the tasks of one command run (see the module docstring)."""

    kind: str = "local"
    workers: int = 2
    scheduler: str | None = None
    cluster: str | None = None
    cluster_config: Path | None = None

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ExecutorError(f"unknown executor {self.kind!r}; choose from {EXECUTORS}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ExecutorError(f"--workers must be a positive integer, got {self.workers!r}")
        if self.kind == "local" and (self.scheduler or self.cluster):
            flag = "--scheduler" if self.scheduler else "--cluster"
            raise ExecutorError(f"{flag} needs --executor dask (not --executor local)")
        if self.scheduler and self.cluster:
            raise ExecutorError("give either --scheduler (an existing Dask scheduler) or --cluster, not both")
        if self.cluster is not None and self.cluster not in CLUSTERS:
            raise ExecutorError(f"unknown cluster {self.cluster!r}; choose from {CLUSTERS}")
        if self.cluster and self.cluster_config is None:
            raise ExecutorError(f"--cluster {self.cluster} needs --cluster-config FILE "
                                "(see docs/slurm.example.toml)")
        if self.cluster_config is not None and not self.cluster:
            raise ExecutorError("--cluster-config needs --cluster slurm")
        if self.scheduler and "://" not in self.scheduler and ":" not in self.scheduler:
            raise ExecutorError(f"--scheduler wants an address such as tcp://host:8786, got {self.scheduler!r}")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ExecutorSpec":
        """The spec of parsed command-line arguments (see :func:`add_arguments`); the cluster config
        is read and checked here, before any work starts."""
        kind = getattr(args, "executor", None)
        scheduler, cluster = getattr(args, "scheduler", None), getattr(args, "cluster", None)
        if kind is None:  # --scheduler or --cluster alone imply Dask
            kind = "dask" if scheduler or cluster else "local"
        workers = getattr(args, "workers", None)
        config = getattr(args, "cluster_config", None)
        spec = cls(kind, workers if workers is not None else (os.cpu_count() or 1), scheduler, cluster,
                   Path(config) if config is not None else None)
        if spec.cluster == "slurm":
            spec.slurm_config()
        return spec

    def slurm_config(self) -> SlurmConfig:
        if self.cluster_config is None:
            raise ExecutorError("no --cluster-config given")
        return SlurmConfig.from_file(self.cluster_config)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (for a run's metadata)."""
        out = asdict(self)
        out["cluster_config"] = str(self.cluster_config) if self.cluster_config else None
        return out


def add_arguments(parser: argparse.ArgumentParser, *, workers_default: int | None = 2,
                  workers_help: str = "local processes, Dask local-cluster workers, or SLURM jobs",
                  workers_default_text: str | None = None) -> None:
    """Add ``--executor``, ``--scheduler``, ``--cluster``, ``--cluster-config`` and ``--workers``.

    ``workers_default=None`` means all cores of this machine, unless the command resolves it itself
    (then ``workers_default_text`` says how).
    """
    group = parser.add_argument_group("where the work runs")
    group.add_argument("--executor", choices=EXECUTORS, default=None,
                       help="local processes (default) or Dask; --scheduler or --cluster imply dask")
    group.add_argument("--scheduler", metavar="ADDRESS", default=None,
                       help="address of a running Dask scheduler, e.g. tcp://login1:8786")
    group.add_argument("--cluster", choices=CLUSTERS, default=None,
                       help="start Dask workers as jobs of this batch system (dask-jobqueue)")
    group.add_argument("--cluster-config", metavar="FILE", type=Path, default=None,
                       help="TOML file with a [slurm] table: queue, cores, memory, walltime, prologue, python")
    from .cli.common import positive_int

    default = workers_default_text or ("all cores" if workers_default is None else workers_default)
    group.add_argument("--workers", metavar="N", type=positive_int, default=workers_default,
                       help=f"{workers_help} (default {default}; ignored with --scheduler)")


@contextmanager
def open_executor(spec: ExecutorSpec, *, task_cores: int | None = None) -> Iterator[Executor]:
    """An executor for ``spec``; leaving the block shuts down it and any cluster it started.

    ``task_cores``: cores each task uses (e.g. MPI ranks of one DFT labelling); with Dask every
    task then asks for that much of the worker resource ``cores``.  On an error inside the block,
    tasks not yet started are cancelled.
    """
    if task_cores is not None and task_cores < 1:
        raise ExecutorError(f"a task needs at least one core, got {task_cores}")
    if spec.kind == "local":
        pool = ProcessPoolExecutor(max_workers=spec.workers)
        try:
            yield pool
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return
    with ExitStack() as stack:
        client = _dask_client(spec, task_cores, stack)
        import dask

        # a task carries its inputs (a sweep task: its structures' features, often > 10 MB): by design
        stack.enter_context(dask.config.set({"distributed.admin.large-graph-warning-threshold": "2GB"}))
        options: dict[str, Any] = {"pure": False}
        if task_cores:
            options["resources"] = {CORES: task_cores}
        executor = client.get_executor(**options)
        try:
            yield executor
        except BaseException:
            executor.shutdown(wait=False)
            raise
        executor.shutdown(wait=True)


def _dask_client(spec: ExecutorSpec, task_cores: int | None, stack: ExitStack):
    """A ``distributed.Client`` for ``spec`` (closed, with its cluster, when ``stack`` closes)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ExecutorError("--executor dask needs the packages dask and distributed: "
                            "pip install 'uipbench[dask]'") from None
    if spec.scheduler:
        try:
            client = stack.enter_context(Client(spec.scheduler, timeout=CONNECT_TIMEOUT))
        except (OSError, TimeoutError) as exc:
            raise ExecutorError(f"cannot reach the Dask scheduler at {spec.scheduler}: {exc}") from None
        _check_cores(client, spec.scheduler, task_cores)
        return client
    if spec.cluster == "slurm":
        cluster = stack.enter_context(slurm_cluster(spec.slurm_config(), task_cores))
        cluster.scale(jobs=spec.workers)
    else:
        cluster = stack.enter_context(LocalCluster(
            n_workers=spec.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None, resources={CORES: task_cores or 1},
            silence_logs=logging.ERROR))  # not the nannies' "still alive after 4 s, killing" at shutdown
    return stack.enter_context(Client(cluster))


def slurm_cluster(config: SlurmConfig, task_cores: int | None = None):
    """A ``dask_jobqueue.SLURMCluster`` (no jobs submitted yet) for ``config``."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ExecutorError("--cluster slurm needs the package dask-jobqueue: pip install 'uipbench[dask]'") from None
    if task_cores and task_cores > config.cores_per_worker:
        raise ExecutorError(f"a task needs {task_cores} cores but a worker of {config.path or 'the config'} "
                            f"has {config.cores_per_worker} (cores / processes)")
    return SLURMCluster(**config.cluster_kwargs())


def _check_cores(client, address: str, task_cores: int | None) -> None:
    """Refuse a scheduler whose connected workers cannot run a task needing ``task_cores`` cores
    (the tasks would wait forever)."""
    if not task_cores:
        return
    workers = client.scheduler_info().get("workers", {})
    if workers and not any(w.get("resources", {}).get(CORES, 0) >= task_cores for w in workers.values()):
        raise ExecutorError(
            f"no worker of {address} offers {task_cores} '{CORES}'; start the workers with "
            f"`dask worker {address} --nthreads K --resources {CORES}=K` (K >= {task_cores})")
