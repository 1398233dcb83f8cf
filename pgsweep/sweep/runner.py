"""Fan a sweep's shards out as Ray tasks and gather their tables (the only Ray importer).

Ray Core tasks, not Ray Data and not actors (README, "Why Ray Core tasks"):
- resuming is a manifest of finished shards (pgsweep.sweep.grid.ShardStore), written by
  the driver as each shard's table arrives; Ray Data's checkpointing only engages for
  plans that read files and write files, which a generated grid is not;
- a task that dies with its worker or node is retried (`max_retries`) and lineage
  rebuilds a lost result, where an actor would need restart logic of our own;
- the job (model weights, images) is put in the object store once; each worker process
  keeps the network it built in a cache keyed by the job's hash, so a worker that runs
  many shards builds it once, which is what an actor would have bought.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pgsweep.errors import ConfigError
from pgsweep.settings import RaySettings  # noqa: F401  (light, for config checks; re-exported)
from pgsweep.sweep.grid import Shard, ShardStore, SweepJob

# Ray reads this once, at import: "0" makes a local Ray bind and connect on 127.0.0.1
# instead of the machine's network address (it also refuses `ray start --address` joins).
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

log = logging.getLogger(__name__)


@dataclass
class SweepStats:
    """What a sweep did: shards computed now and found finished, where, how fast."""

    shards: int
    computed: int = 0
    resumed: int = 0
    points: int = 0
    seconds: float = 0.0
    nodes: dict[str, int] = field(default_factory=dict)  # node id -> shards it computed (all runs)

    @property
    def points_per_second(self) -> float:
        return self.points / self.seconds if self.seconds > 0 else float("nan")


# ---------------------------------------------------------------- reaching a cluster

def check_address(address: str | None, timeout: float = 5.0) -> None:
    """Fail in seconds with one line if ray.address names a cluster that is not there."""
    if not address:
        return
    if address == "auto":
        if os.environ.get("RAY_ADDRESS"):
            return check_address(os.environ["RAY_ADDRESS"], timeout)
        # where `ray start` records the running cluster for "auto"
        if not Path("/tmp/ray/ray_current_cluster").exists():
            raise ConfigError("ray.address=auto: no running Ray cluster found on this machine; "
                              "start one with `ray start --head` or leave ray.address unset")
        return
    host_port = address.removeprefix("ray://")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"ray.address '{address}' is not auto, HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as error:
        raise ConfigError(f"cannot reach the Ray cluster at ray.address={address}: {error}") from None


_KEEP_ALIVE = {"between_jobs": False}


def keep_ray_between_jobs() -> None:
    """Leave a Ray this process starts running until the process exits, for the next job.

    A multirun's jobs run one after another in one process (Hydra's basic launcher); a
    local Ray takes seconds to start, more than a thesis-sized sweep takes, so the jobs
    share the first one's (pgsweep.multirun calls this).
    """
    _KEEP_ALIVE["between_jobs"] = True


def _shutdown_at_exit() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


@contextmanager
def ray_session(settings: RaySettings) -> Iterator[None]:
    """Join the configured cluster (or start a local Ray) unless this process already did."""
    if not settings.address:
        # A Ray of our own on this machine listens on 127.0.0.1 only, like the MLflow UI:
        # by default Ray would advertise the machine's network address to anyone.
        os.environ.setdefault(LOOPBACK_ONLY, "0")
    import ray

    if ray.is_initialized():  # a caller (a notebook, a test) owns the connection
        yield
        return
    kwargs: dict = {"include_dashboard": False, "logging_level": logging.WARNING}
    if settings.address:
        kwargs["address"] = settings.address
    elif settings.num_cpus:
        kwargs["num_cpus"] = settings.num_cpus
    try:
        ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise ConfigError(f"cannot start or join Ray (ray.address={settings.address}): "
                          f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    if _KEEP_ALIVE["between_jobs"]:
        import atexit

        atexit.register(_shutdown_at_exit)
        yield
        return
    try:
        yield
    finally:
        ray.shutdown()


# ---------------------------------------------------------------- the work on a worker

_NETWORKS: dict[str, torch.nn.Module] = {}  # per worker process: job key -> network
_JOBS: dict[str, SweepJob] = {}


def _run_shard(job_box: list, key: str, shard: Shard, threads: int, use_gpu: bool):
    """One shard on a worker: returns (shard index, its table, where and how long it ran)."""
    import ray

    torch.set_num_threads(threads)
    if key not in _JOBS:  # the ref arrives boxed so a worker that has the job skips fetching it
        _JOBS.clear()  # one job at a time per worker: drop an earlier sweep's
        _NETWORKS.clear()
        _JOBS[key] = ray.get(job_box[0])
        network = _JOBS[key].network()
        _NETWORKS[key] = network.cuda() if use_gpu and torch.cuda.is_available() else network
    job, network = _JOBS[key], _NETWORKS[key]
    started = time.perf_counter()
    table = job.run(shard, network)
    meta = {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
            "seconds": round(time.perf_counter() - started, 4)}
    return shard.index, table, meta


# ---------------------------------------------------------------- the driver

class _Progress:
    """Shards done of total and points per second, on stderr (tqdm)."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=done, unit="shard", desc="adversarial sweep",
                        disable=not enabled, file=sys.stderr, dynamic_ncols=True)
        self.started, self.points = time.perf_counter(), 0

    def update(self, points: int) -> None:
        self.points += points
        rate = self.points / max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{rate:,.0f} points/s", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run_sweep(
    job: SweepJob,
    shards: Sequence[Shard],
    store: ShardStore,
    settings: RaySettings,
    key: str,
    progress: bool = True,
    on_shard: Callable[[int], None] | None = None,
) -> SweepStats:
    """Compute every shard not yet in `store` (on Ray, or in-process), saving each as it arrives."""
    finished = store.finished()
    todo = [s for s in shards if s.index not in finished]
    stats = SweepStats(shards=len(shards), resumed=len(shards) - len(todo))
    for record in finished.values():
        stats.nodes[record.get("node", "?")] = stats.nodes.get(record.get("node", "?"), 0) + 1
    if stats.resumed:
        log.info("resuming from %s: %d of %d shards already finished", store.folder, stats.resumed, len(shards))
    bar = _Progress(len(shards), stats.resumed, progress)
    started = time.perf_counter()

    def finish(shard: Shard, table, meta: dict) -> None:
        store.save(shard, table, **meta)
        points = len(table)
        stats.computed += 1
        stats.points += points
        stats.nodes[meta["node"]] = stats.nodes.get(meta["node"], 0) + 1
        bar.update(points)
        if on_shard is not None:
            on_shard(shard.index)

    try:
        if not settings.enabled:
            network = job.network()
            for shard in todo:
                t0 = time.perf_counter()
                table = job.run(shard, network)
                finish(shard, table, {"node": "local", "pid": os.getpid(),
                                      "seconds": round(time.perf_counter() - t0, 4)})
        elif todo:
            _run_on_ray(job, todo, settings, key, finish)
    finally:
        bar.close()
        stats.seconds = time.perf_counter() - started
    return stats


def _run_on_ray(job: SweepJob, todo: Sequence[Shard], settings: RaySettings, key: str, finish) -> None:
    import ray

    by_index = {s.index: s for s in todo}
    with ray_session(settings):
        job_ref = ray.put(job)  # once: every task reads the same copy
        task = ray.remote(_run_shard).options(
            name="pgsweep_shard",
            num_cpus=settings.task_cpus,
            num_gpus=settings.task_gpus,
            max_retries=settings.max_retries,
            retry_exceptions=False,  # a bug in the math fails fast; a dead worker is retried
            scheduling_strategy=settings.scheduling,
        )
        threads = max(1, int(settings.task_cpus))
        queue = list(todo)
        limit = settings.max_in_flight or len(queue)
        pending: list = []
        try:
            while queue or pending:
                while queue and len(pending) < limit:
                    pending.append(task.remote([job_ref], key, queue.pop(0), threads, settings.task_gpus > 0))
                ready, pending = ray.wait(pending, num_returns=1)
                more, pending = ray.wait(pending, num_returns=len(pending), timeout=0) if pending else ([], [])
                for ref in ready + more:
                    index, table, meta = ray.get(ref)
                    finish(by_index[index], table, meta)
        finally:
            for ref in pending:  # interrupted: stop the rest; finished shards are on disk
                ray.cancel(ref, force=True)
