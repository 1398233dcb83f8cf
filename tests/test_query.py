"""Querying a model trained earlier: its recorded data, the split it logs, its store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import write_gif
from pgsweep import load_model
from pgsweep.config import override_keys
from pgsweep.errors import DataError, ModelError
from pgsweep.pipeline import run_pipeline


@pytest.fixture(scope="module")
def yale_model(tmp_path_factory):
    """A 1-epoch model on a small Yale-named folder, trained with seed 3 (so split_seed 3), in
    experiment `faces`."""
    from hydra import compose, initialize_config_dir

    from pgsweep.cli import config_dir

    folder = tmp_path_factory.mktemp("yale_model")
    root = folder / "faces"
    root.mkdir()
    for seed, name in enumerate(f"subject{s:02d}.{c}" for s in (1, 2, 3)
                                for c in ("happy", "sad", "normal", "wink", "sleepy", "glasses")):
        write_gif(root / name, seed)
    uri = f"sqlite:///{folder}/mlflow.db"
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"tracking.uri={uri}", "trainer.progress_bar=false", "stages=[train]",
            "data=yale", f"data.root={root}", "data.image_size=32", "model.kernel_size=3",
            "trainer.max_epochs=1", "seed=3", "tracking.experiment=faces",
        ])
    return uri, root, run_pipeline(cfg)


def _evaluate(compose_config, uri: str, run_id: str, *overrides: str):
    """What `pgsweep stages=[evaluate] model_ref=RUN_ID ...` runs: only `overrides` count as chosen."""
    cfg = compose_config("stages=[evaluate]", f"model_ref={run_id}", f"tracking.uri={uri}", *overrides)
    return run_pipeline(cfg, chosen=override_keys(overrides))


def test_query_uses_the_models_recorded_data_and_logs_it(yale_model, compose_config):
    uri, root, trained = yale_model
    assert trained.model.provenance["root"] == str(root.resolve())
    result = _evaluate(compose_config, uri, trained.run_id)  # the config still says digits, seed 0
    reports = result.reports["evaluate"]
    assert reports["test"].wrong == trained.reports["train"].test.wrong
    run = MlflowClient(uri).get_run(result.run_id)
    params = run.data.params
    # the data and split actually used, not the config's digits defaults
    assert params["data.name"] == "yale" and params["data.root"] == str(root.resolve())
    assert params["data.image_size"] == "32" and params["data.split_seed"] == "3"
    assert params["model.kernel_size"] == "3" and params["split.source"] == "model"
    assert params["split.test"] == str(reports["test"].images)
    client = MlflowClient(uri)
    wrong = Path(client.download_artifacts(result.run_id, "errors/test_misclassified.txt")).read_text()
    assert wrong.split() == list(reports["test"].wrong)
    assert "errors/train_misclassified.txt" in {a.path for a in client.list_artifacts(result.run_id, "errors")}


def test_a_query_goes_beside_its_model_and_names_the_run_it_queried(yale_model, compose_config, tmp_path):
    from pgsweep.tracking import EXPERIMENT_KIND_TAG, MODEL_RUN_TAG

    uri, _, trained = yale_model
    client = MlflowClient(uri)
    faces = client.get_experiment_by_name("faces")
    for ref in (trained.run_id, f"runs:/{trained.run_id}/model/pgsweep-model.pt"):
        run = client.get_run(_evaluate(compose_config, uri, ref).run_id)  # the config says experiment pgsweep
        assert run.info.experiment_id == faces.experiment_id
        assert run.data.tags[MODEL_RUN_TAG] == trained.run_id and run.data.params["tracking.experiment"] == "faces"

    typed = client.get_run(_evaluate(compose_config, uri, trained.run_id, "tracking.experiment=mine").run_id)
    assert client.get_experiment(typed.info.experiment_id).name == "mine"  # what the user typed wins
    assert typed.data.tags[MODEL_RUN_TAG] == trained.run_id

    path = trained.model.save(tmp_path / "pgsweep-model.pt")  # a file records no run: the config's experiment
    from_file = client.get_run(_evaluate(compose_config, uri, str(path)).run_id)
    assert client.get_experiment(from_file.info.experiment_id).name == "pgsweep"
    assert MODEL_RUN_TAG not in from_file.data.tags
    # every experiment pgsweep made is of MLflow's "Machine learning" kind
    for name in ("faces", "mine", "pgsweep"):
        assert client.get_experiment_by_name(name).tags[EXPERIMENT_KIND_TAG] == "custom_model_development", name


def test_explicit_data_overrides_win_and_a_missing_root_names_the_override(
    yale_model, compose_config, tmp_path
):
    uri, root, trained = yale_model
    moved = tmp_path / "elsewhere"
    shutil.copytree(root, moved)
    root.rename(root.with_name("faces-moved-away"))
    try:
        with pytest.raises(DataError, match=r"images in .*faces, which is not there: pass data.root=PATH"):
            _evaluate(compose_config, uri, trained.run_id)
        result = _evaluate(compose_config, uri, trained.run_id, f"data.root={moved}")
        assert MlflowClient(uri).get_run(result.run_id).data.params["data.root"] == str(moved)
        with pytest.raises(ModelError, match="classes"):  # data=digits chosen: the config's digits
            _evaluate(compose_config, uri, trained.run_id, "data=digits")
    finally:
        root.with_name("faces-moved-away").rename(root)


def test_load_model_never_creates_a_store(yale_model, tmp_path, monkeypatch):
    uri, _, trained = yale_model
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ModelError, match=r"no MLflow store at .*mlflow\.db.*tracking_uri="):
        load_model(trained.run_id)
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no mlruns/
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert load_model(trained.run_id).class_names == ("subject01", "subject02", "subject03")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert load_model(trained.run_id, tracking_uri=uri).provenance["dataset"] == "yale"
    assert list(tmp_path.iterdir()) == []


def test_override_keys_name_what_the_command_line_chose():
    from pgsweep.config import chose

    keys = override_keys(["data.root=/x", "+trainer.foo=1", "~tracking.run_name", "++seed=2", "stages=[a,b]"])
    assert keys == {"data.root", "trainer.foo", "tracking.run_name", "seed", "stages"}
    assert chose(keys, "data.root") and not chose(keys, "data.name")
    assert chose(override_keys(["data=yale"]), "data.name")  # a group choice sets every key in it
    assert not chose(override_keys(["database=1"]), "data.root")


def test_the_experiment_kind_and_the_stored_view_are_the_ones_the_installed_mlflow_ui_uses():
    """The tag pgsweep sets is what MLflow's own experiment-kind selector writes for its
    "Machine learning" kind. Its 3.17.2 UI takes the view (GenAI or model training) from
    a link's workflowType, else the switch the browser stored (GenAI at first), and reads
    the tag only behind a feature flag that this build fixes on (in Chromium a tagged
    experiment opened in GenAI in a fresh browser, README). So pgsweep's server app
    (pgsweep/mlflow_ui.py) stores the model-training view where the switch keeps it, under
    WORKFLOW_TYPE_STORAGE_KEY, JSON-encoded as the UI writes and reads it. Read from the
    installed MLflow's JS bundle: a renamed tag, key or value, a changed encoding, or a UI
    that reads the tag, fails here."""
    import re

    import mlflow

    from pgsweep.mlflow_ui import MODEL_TRAINING_WORKFLOW_TYPE, WORKFLOW_TYPE_STORAGE_KEY
    from pgsweep.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, UI_VIEW

    bundle = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    code = "".join(path.read_text(errors="ignore") for path in sorted(bundle.glob("*.js")))
    assert f'setExperimentTag({{experiment_id:t,key:"{EXPERIMENT_KIND_TAG}",value:n}})' in code
    assert f'CUSTOM_MODEL_DEVELOPMENT="{MODEL_TRAINING_KIND}"' in code
    assert f'e.GENAI="genai",e.MACHINE_LEARNING="{MODEL_TRAINING_WORKFLOW_TYPE}"' in code
    assert 'e.get("workflowType")' in code and UI_VIEW == f"workflowType={MODEL_TRAINING_WORKFLOW_TYPE}"
    name, version = WORKFLOW_TYPE_STORAGE_KEY.rsplit("_v", 1)
    stored = re.search(rf'const ([\w$]+)=[\w$]+\.GENAI,.{{0,200}}\{{key:"{re.escape(name)}",version:{version},initialValue:\1\}}', code)
    assert stored, "the stored switch moved, or no longer starts at GenAI"
    # its useLocalStorage: the item `${key}_v${version}`, read with JSON.parse, written with JSON.stringify
    storage = re.search(r'const ([\w$]+)=\(([\w$]+),([\w$]+)\)=>`\$\{\2\}_v\$\{\3\}`;'
                        r'const [\w$]+=\([\w$,]+\)=>\{const ([\w$]+)=\1\([\w$]+,[\w$]+\);'
                        r'try\{const ([\w$]+)=window\.localStorage\.getItem\(\4\);return \5\?JSON\.parse\(\5\):[\w$]+\}'
                        r'.{0,80}=\1\([\w$]+,[\w$]+\),([\w$]+)=JSON\.stringify\([\w$]+\);try\{localStorage\.setItem\([\w$]+,\6\)', code)
    assert storage, "the UI's localStorage keys or encoding changed: pgsweep/mlflow_ui.py stores the view as it did"
    # the kind the UI goes by: flag ? kind-of(workflowType) : the tag's value
    kind = re.search(r'\{const\{workflowType:([\w$]+)\}=\(0,[\w$.]+\)\(\),([\w$]+)=\(0,([\w$]+)\.([\w$]+)\)\(\);'
                     r'return\(0,[\w$.]+\)\(\(\)=>\2\?[\w$]+\(\1\):\(e=>\{[^}]*"'
                     + re.escape(EXPERIMENT_KIND_TAG) + r'"===e\.key', code)
    assert kind, "the UI's experiment-kind hook changed: check in a browser whether it reads the tag now"
    flags, flag = kind.group(3), kind.group(4)
    module = re.findall(rf'\b{re.escape(flags)}=n\((\d+)\)', code[:kind.start()])[-1]
    body = re.search(rf'[,{{]{module}\(e,t,n\)\{{(.*?)\}},\d+\(e,t,n\)\{{', code, re.S).group(1)
    local = re.search(rf'[{{,]{re.escape(flag)}:\(\)=>([\w$]+)[,}}]', body).group(1)
    assert re.search(rf'[,\s]{re.escape(local)}=\(\)=>!0[,;]', body), "the flag that hides the tag is no longer on"
