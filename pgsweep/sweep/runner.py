"""Fan a sweep's shards out as Ray tasks and gather their tables (the only Ray importer).

Ray Core tasks, not Ray Data and not actors (README, "Why Ray Core tasks"):
- resuming is a manifest of finished shards (pgsweep.sweep.store.ShardStore), written by
  the driver as each shard's table arrives; Ray Data's checkpointing only engages for
  plans that read files and write files, which a generated grid is not;
- a task that dies with its worker or node is retried (`max_retries`) and lineage
  rebuilds a lost result, where an actor would need restart logic of our own;
- the job (model weights, images) is put in the object store once; each worker process
  keeps the network it built in a cache keyed by the job's hash, so a worker that runs
  many shards builds it once, which is what an actor would have bought.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pgsweep.errors import ConfigError
from pgsweep.progress import progress_bar, use_piece_bars
from pgsweep.settings import RaySettings  # noqa: F401  (light, for config checks; re-exported)
from pgsweep.sweep.job import Job, Piece
from pgsweep.sweep.store import ShardStore

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


class HeldSignals:
    """SIGINT and SIGTERM recorded while Ray runs, and handed on at a point where stopping is clean.

    Two things go wrong when a signal's handler runs inside Ray:
    - a Python handler that raises while Ray's C++ code waits (ray.wait, ray.get) comes
      out as `SystemError: <cyfunction CoreWorker.wait ...> returned a result with an
      exception set`, not as the handler's exception;
    - ray.init replaces the SIGTERM handler twice over: in Python with `sys.exit(15)`,
      and in C++ (its core worker's failure handler) with a stack dump and an abort (134).
    So while Ray is in use a signal is only recorded; `hold()` takes both signals back
    after ray.init, and `deliver()` passes a recorded one to the handler that was there
    before (pgsweep's: Interrupted; a notebook's: KeyboardInterrupt), between shards.
    Outside the main thread, where handlers cannot be set, it does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.active = threading.current_thread() is threading.main_thread()
        self.previous: dict[int, object] = {}
        self.received: int | None = None
        self.delivered = False

    def __enter__(self) -> "HeldSignals":
        if self.active:
            self.previous = {s: signal.getsignal(s) for s in self.SIGNALS}
            self.hold()
        return self

    def hold(self) -> None:
        if self.active and not self.delivered:
            for signum in self.SIGNALS:
                signal.signal(signum, self._record)

    def _record(self, signum: int, frame) -> None:
        if self.received is None:
            self.received = signum

    def deliver(self) -> None:
        """Hand a recorded signal to the previous handler now (it usually raises)."""
        if self.received is None:
            return
        signum, self.received = self.received, None
        self._restore()
        self.delivered = True
        signal.raise_signal(signum)  # the previous handler runs before this returns
        self.delivered = False  # it returned (SIG_IGN, a handler that only logs): keep holding
        self.hold()

    def _restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def __exit__(self, kind, error, traceback) -> None:
        # after a delivery the previous handler has set what it wants (pgsweep: ignore repeats)
        if self.active and not self.delivered:
            self._restore()
            if self.received is not None and kind is None:  # came after the last shard: hand it on now
                self.delivered = True
                signal.raise_signal(self.received)


@contextmanager
def _loopback_only(local: bool) -> Iterator[None]:
    """A Ray started here binds and advertises 127.0.0.1 only (its processes inherit this).

    Ray reads LOOPBACK_ONLY once, when it is imported, into ray_constants; when Ray was
    imported earlier (a notebook), the constant is set too, since Ray's services read it
    at each call. Both are put back afterwards, so a later join of a remote cluster from
    the same process advertises a reachable address.
    """
    if not local:
        yield
        return
    before = os.environ.get(LOOPBACK_ONLY)
    os.environ.setdefault(LOOPBACK_ONLY, "0")
    from ray._private import ray_constants

    constant = ray_constants.ENABLE_RAY_CLUSTER
    if os.environ[LOOPBACK_ONLY] == "0":
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = constant
        if before is None:
            os.environ.pop(LOOPBACK_ONLY, None)


class _QuietTokenNotice(logging.Filter):
    """Ray's notice that a new local cluster uses token authentication, printed at every
    start; pgsweep's local Ray is its own, on loopback. Ray's warning that authentication
    is *off* still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled")


def _started_since(start: float) -> list:
    """This process's descendants created since `start` (Ray's GCS, raylet, agents, workers)."""
    import psutil  # Ray ships it (ray/thirdparty_files), and puts it on the path when imported

    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if process.create_time() >= start - 1:
                found.append(process)
        except psutil.Error:
            pass
    return found


def _reap(processes: list, timeout: float = 10.0) -> None:
    """Wait for Ray's processes to exit after ray.shutdown; kill any still there, so no
    worker outlives the command as an orphan."""
    import psutil

    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        try:
            log.debug("Ray process %d (%s) still running after shutdown: killed", process.pid, process.name())
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=timeout)


_ACTIVE: list[HeldSignals] = []  # the signals held by the session in progress (sessions nest)
_BETWEEN_JOBS = {"keep": False}


def keep_ray_between_jobs() -> None:
    """Leave a Ray this process starts running until the process exits, for the next job.

    A multirun's jobs run one after another in one process (Hydra's basic launcher); a
    local Ray takes seconds to start, more than a thesis-sized sweep takes, so the jobs
    share the first one's (pgsweep.multirun calls this). At exit it is shut down with every
    process it started, as after a single command.
    """
    _BETWEEN_JOBS["keep"] = True


def _shutdown_at_exit(processes: list) -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    _reap(processes)


@contextmanager
def ray_session(settings: RaySettings) -> Iterator[HeldSignals]:
    """Join the configured cluster (or start a local Ray) unless this process already did.

    A local Ray of our own listens on 127.0.0.1 only, like the MLflow UI (by default Ray
    would advertise the machine's network address to anyone), and is shut down with every
    process it started (at exit, after keep_ray_between_jobs). Yields the HeldSignals that
    a loop waiting on Ray hands on between shards (`deliver()`); a session opened inside
    another (a stage running several sweeps in one Ray) shares the outer one's.
    """
    if _ACTIVE:
        yield _ACTIVE[-1]
        return
    with HeldSignals() as held, _loopback_only(not settings.address):
        _ACTIVE.append(held)
        try:
            import ray

            if ray.is_initialized():  # a caller (a notebook, a test) or an earlier job started it
                yield held
                return
            # unset ray.address is a Ray of our own: "local", since with no address Ray joins a
            # cluster `ray start` left on this machine (/tmp/ray/ray_current_cluster, RAY_ADDRESS)
            kwargs: dict = {"include_dashboard": False, "logging_level": logging.WARNING,
                            "address": settings.address or "local"}
            if not settings.address and settings.num_cpus:
                kwargs["num_cpus"] = settings.num_cpus
            notices = logging.getLogger("ray._private.authentication.authentication_token_setup")
            quiet = _QuietTokenNotice()
            notices.addFilter(quiet)
            started = time.time()
            try:
                ray.init(**kwargs)
            except SystemExit as stop:
                if stop.code != signal.SIGTERM:
                    raise
                held.received = held.received or signal.SIGTERM  # ray.init's own handler: sys.exit(15)
            except (ConnectionError, ValueError, RuntimeError) as error:
                if not settings.address:
                    _reap(_started_since(started), timeout=5)
                raise ConfigError(f"cannot start or join Ray (ray.address={settings.address}): "
                                  f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
            finally:
                notices.removeFilter(quiet)
                held.hold()
            processes = [] if settings.address else _started_since(started)  # joined: none are ours
            if _BETWEEN_JOBS["keep"]:
                atexit.register(_shutdown_at_exit, processes)
                held.deliver()  # a signal that came while Ray started
                yield held
                return
            try:
                held.deliver()
                yield held
            finally:
                ray.shutdown()
                _reap(processes)
        finally:
            _ACTIVE.pop()


# ---------------------------------------------------------------- the work on a worker

_NETWORKS: dict[str, torch.nn.Module] = {}  # per worker process: job key -> network
_JOBS: dict[str, Job] = {}


def _run_shard(job_box: list, key: str, shard: Piece, threads: int, use_gpu: bool):
    """One shard on a worker: returns (shard index, its table, where and how long it ran)."""
    import ray

    from ray.experimental import tqdm_ray

    torch.set_num_threads(threads)
    # a piece's own bars (a pruning task's steps) drawn by the driver, not in the worker's log
    use_piece_bars(lambda total, label: tqdm_ray.tqdm(total=total, desc=label))
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

    def __init__(self, total: int, done: int, enabled: bool, label: str) -> None:
        self.bar = progress_bar(total, label, enabled, unit="shard", initial=done)
        self.started, self.points = time.perf_counter(), 0

    def update(self, points: int) -> None:
        self.points += points
        rate = self.points / max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{rate:,.0f} points/s", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run_sweep(
    job: Job,
    store: ShardStore,
    settings: RaySettings,
    progress: bool = True,
    on_shard: Callable[[int], None] | None = None,
) -> SweepStats:
    """Compute every piece of `job` not yet in `store` (on Ray, or in-process), saving each as it
    arrives; `job.gather(store.tables(job.pieces()))` reads the whole result back.

    Ctrl-C or SIGTERM stops it between shards: every shard already saved stays saved (the
    same command resumes from them), the rest are cancelled, and a local Ray is shut down
    with all its processes before the interrupt goes on (pgsweep: exit 130 or 143).
    """
    shards, key, label = job.pieces(), job.key(), job.label
    finished = store.finished()
    todo = [s for s in shards if s.index not in finished]
    stats = SweepStats(shards=len(shards), resumed=len(shards) - len(todo))
    for record in finished.values():
        stats.nodes[record.get("node", "?")] = stats.nodes.get(record.get("node", "?"), 0) + 1
    if stats.resumed:
        log.info("resuming from %s: %d of %d shards already finished", store.folder, stats.resumed, len(shards))
    started = time.perf_counter()
    bar: _Progress | None = None

    def finish(shard: Piece, table, meta: dict) -> None:
        # the job's own notes on how the piece was computed (table.attrs: the inference copy's use)
        store.save(shard, table, **{**table.attrs, **meta})
        points = len(table)
        stats.computed += 1
        stats.points += points
        stats.nodes[meta["node"]] = stats.nodes.get(meta["node"], 0) + 1
        bar.update(points)
        if on_shard is not None:
            on_shard(shard.index)

    try:
        if not settings.enabled or not todo:
            bar = _Progress(len(shards), stats.resumed, progress, label)
            network = job.network() if todo else None
            for shard in todo:
                t0 = time.perf_counter()
                table = job.run(shard, network)
                finish(shard, table, {"node": "local", "pid": os.getpid(),
                                      "seconds": round(time.perf_counter() - t0, 4)})
        else:
            with ray_session(settings) as held:
                # the bar starts after Ray's start-up, so nothing Ray prints lands inside it
                bar = _Progress(len(shards), stats.resumed, progress, label)
                _run_on_ray(job, todo, settings, key, finish, held)
    finally:
        if bar is not None:
            bar.close()
        stats.seconds = time.perf_counter() - started
    return stats


def _run_on_ray(job: Job, todo: Sequence[Piece], settings: RaySettings, key: str, finish,
                held: HeldSignals) -> None:
    import ray

    by_index = {s.index: s for s in todo}
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
            # short waits, so that a signal recorded meanwhile is acted on within a second
            ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            if ready:
                more, pending = ray.wait(pending, num_returns=len(pending), timeout=0) if pending else ([], [])
                for ref in ready + more:
                    index, table, meta = ray.get(ref)
                    finish(by_index[index], table, meta)
            held.deliver()
    finally:
        for ref in pending:  # interrupted or failed: stop the rest; finished shards are on disk
            ray.cancel(ref, force=True)
