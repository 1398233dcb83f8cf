"""Grid -> shards -> Ray tasks -> gathered tables. The only package that imports Ray
(and only inside pgsweep.sweep.runner, when a sweep runs)."""

from pgsweep.sweep.grid import Shard, ShardStore, SweepJob, make_shards
from pgsweep.sweep.runner import RaySettings, SweepStats, check_address, run_sweep

__all__ = ["RaySettings", "Shard", "ShardStore", "SweepJob", "SweepStats", "check_address", "make_shards", "run_sweep"]
