"""Jobs -> pieces -> Ray tasks -> gathered tables. The only package that imports Ray
(and only inside pgsweep.sweep.runner, when a sweep runs)."""

from pgsweep.sweep.grid import Shard, SweepJob, make_shards
from pgsweep.sweep.job import Job, Piece
from pgsweep.sweep.runner import RaySettings, SweepStats, check_address, run_sweep
from pgsweep.sweep.store import ShardStore, open_store

__all__ = ["Job", "Piece", "RaySettings", "Shard", "ShardStore", "SweepJob", "SweepStats", "check_address",
           "make_shards", "open_store", "run_sweep"]
