"""The same command twice (digits, every stage, Ray with 2 workers) gives identical tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pgsweep.pipeline import STAGES, run_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group(name="ray")]

# what a clock decides, not the code: left out of the comparison
TIMING = ("latency", "seconds", "_time", "time_", "duration", "elapsed", "per_second", "speed")
SMALL = (
    f"stages=[{','.join(STAGES)}]", "data.image_size=44", "data.test_fraction=0.05", "data.val_fraction=0",
    "trainer.max_epochs=1", "analysis.knockout.classes=['0','1']", "analysis.knockout.random_orderings=2",
    "adversarial.max_images=6", "adversarial.images_per_shard=2", "adversarial.progress_bar=false",
    "prune.criteria=[pg_softmax,random]", "prune.seeds=[0]", "prune.finetune_epochs=1", "prune.step_fraction=0.5",
    "prune.latency_repeats=1", "prune.progress_bar=false",
)


def _timing(name: str) -> bool:
    return any(word in name.lower() for word in TIMING)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs: the sweep's and the pruning's pieces on 2 workers."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _tables(uri: str, run_id: str, folder: Path) -> dict[str, pd.DataFrame]:
    """Every Parquet artifact of the run, by its path in the run."""
    local = Path(MlflowClient(uri).download_artifacts(run_id, "", str(folder)))
    return {str(path.relative_to(local)): pd.read_parquet(path) for path in sorted(local.rglob("*.parquet"))}


def test_the_same_command_twice_gives_identical_tables(local_ray, compose_config, tmp_path):
    runs = []
    for name in ("a", "b"):
        uri = f"sqlite:///{tmp_path / name}/mlflow.db"
        result = run_pipeline(compose_config(
            *SMALL, f"tracking.uri={uri}", f"ray.address={local_ray}",
            f"adversarial.output_dir={tmp_path / name / 'shards'}", f"prune.output_dir={tmp_path / name / 'prune'}"))
        runs.append((uri, result.run_id, _tables(uri, result.run_id, tmp_path / f"{name}-artifacts")))
    (uri_a, run_a, tables_a), (uri_b, run_b, tables_b) = runs
    assert set(tables_a) == set(tables_b)
    # a table of every stage: a comparison of nothing cannot pass
    for stage in ("adversarial/", "prune/", "knockout/", "rank/", "features/"):
        assert any(stage in name for name in tables_a), (stage, sorted(tables_a))
    for name, table in tables_a.items():
        other = tables_b[name]
        assert list(table.columns) == list(other.columns), name
        kept = [c for c in table.columns if not _timing(str(c))]
        pd.testing.assert_frame_equal(table[kept], other[kept], check_exact=True, obj=name)

    metrics_a, metrics_b = (MlflowClient(u).get_run(r).data.metrics for u, r in ((uri_a, run_a), (uri_b, run_b)))
    assert {k for k in metrics_a if not _timing(k)} == {k for k in metrics_b if not _timing(k)}
    for key, value in metrics_a.items():
        if not _timing(key):
            assert metrics_b[key] == value, key

    # the same command on run a's stores again: every shard and task reused, none recomputed
    again = run_pipeline(compose_config(
        "stages=[adversarial,prune]", f"model_ref=runs:/{run_a}", f"tracking.uri={uri_a}",
        f"ray.address={local_ray}", *[o for o in SMALL if o.startswith(("adversarial.", "prune."))],
        f"adversarial.output_dir={tmp_path / 'a' / 'shards'}", f"prune.output_dir={tmp_path / 'a' / 'prune'}"))
    metrics = MlflowClient(uri_a).get_run(again.run_id).data.metrics
    assert metrics["adversarial/shards_computed"] == 0 and metrics["adversarial/shards_resumed"] == 3
    assert metrics["prune/tasks_computed"] == 0 and metrics["prune/tasks_resumed"] == 2
