"""The report's rules (conf/report_rules/default.yaml) with command-line overrides, checked before
any work: a malformed value is one ConfigError line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import OmegaConf

from pgsweep.errors import ConfigError
from pgsweep.report.verdicts import Statistics

# (section, key) -> (kind, low, high): the allowed values of every numeric rule
_INTEGER, _NUMBER = "an integer", "a number"
_LIMITS: dict[str, tuple[str, float, float]] = {
    "statistics.confidence": (_NUMBER, 0.5, 0.9999), "statistics.bootstrap": (_INTEGER, 100, 10**6),
    "statistics.seed": (_INTEGER, 0, 2**32 - 1), "statistics.min_models": (_INTEGER, 2, 10**6),
    "statistics.max_interval_width": (_NUMBER, 0, float("inf")), "statistics.alpha": (_NUMBER, 1e-6, 0.5),
    "statistics.permutations": (_INTEGER, 99, 10**6), "statistics.partly_fraction": (_NUMBER, 0, 1),
    "error_rate.thesis_errors": (_INTEGER, 0, 10**6), "error_rate.thesis_images": (_INTEGER, 1, 10**6),
    "error_rate.tolerance_images": (_NUMBER, 0, 10**6), "error_rate.partly_images": (_NUMBER, 0, 10**6),
    "layers.weakest_count": (_INTEGER, 1, 10**6), "layers.majority": (_NUMBER, 0, 1),
    "scales.ratio": (_NUMBER, 1, float("inf")), "scales.partly_ratio": (_NUMBER, 1, float("inf")),
    "consistency.margin": (_NUMBER, 0, 2),
    "knockout.after": (_INTEGER, 1, 10**6), "knockout.after_more": (_INTEGER, 1, 10**6),
    "knockout.few": (_INTEGER, 1, 10**6), "knockout.max_intact_error": (_NUMBER, 0, 1),
    "knockout.area_margin": (_NUMBER, 0, 1), "knockout.fail_error": (_NUMBER, 0, 1),
    "knockout.fail_margin": (_NUMBER, 0, 1), "knockout.overall_margin": (_NUMBER, 0, 1),
    "knockout.weak_error": (_NUMBER, 0, 1), "knockout.weak_more_error": (_NUMBER, 0, 1),
    "knockout.weak_margin": (_NUMBER, 0, 1), "knockout.share": (_NUMBER, 0, 1),
    "knockout.many_share": (_NUMBER, 0, 1), "knockout.little": (_NUMBER, 0, 1),
    "faithfulness.better_margin": (_NUMBER, 0, 2), "faithfulness.min_spearman": (_NUMBER, -1, 1),
    "faithfulness.saturation_margin": (_NUMBER, 0, 2), "faithfulness.sign_margin": (_NUMBER, 0, 2),
    "targets.margin": (_NUMBER, 0, 1), "induced.rms_bins": (_INTEGER, 1, 1000), "induced.margin": (_NUMBER, 0, 1),
}


def rules_file() -> Path:
    """conf/report_rules/default.yaml, inside an installed wheel or the source tree."""
    from pgsweep.cli import config_dir

    return Path(config_dir()) / "report_rules" / "default.yaml"


@dataclass(frozen=True)
class Rules:
    """Every threshold the verdicts use, by section (as in the YAML)."""

    values: Mapping[str, Mapping[str, Any]]

    def __getitem__(self, section: str) -> Mapping[str, Any]:
        return self.values[section]

    @property
    def statistics(self) -> Statistics:
        return Statistics(**self.values["statistics"])

    @property
    def thesis_setup(self) -> dict[str, Any]:
        """The thesis's setup as job params are named: {"trainer.max_epochs": 250, ...}."""
        return {f"{group}.{key}": value for group, keys in self.values["thesis_setup"].items()
                for key, value in keys.items()}

    def text(self, *names: str) -> str:
        """`section.key=value, ...` for whole sections or single `section.key` names: the rules
        behind a verdict, as one overrides them."""
        parts = []
        for name in names:
            section, _, key = name.partition(".")
            keys = [key] if key else list(self.values[section])
            parts += [f"{section}.{k}={self.values[section][k]}" for k in keys]
        return ", ".join(parts)


def load_rules(overrides: Sequence[str] = (), base: Mapping | None = None) -> Rules:
    """The YAML's rules (or `base`, e.g. a multirun's report_rules node), then `key=value`
    overrides; raises ConfigError naming the first bad one."""
    config = OmegaConf.load(rules_file())
    if base is not None:  # a multirun's node: the YAML as composed then, with its overrides
        config = OmegaConf.merge(config, OmegaConf.create(dict(base)))
    defaults = OmegaConf.load(rules_file())
    OmegaConf.set_struct(defaults, True)
    for override in overrides:
        key, equals, value = override.partition("=")
        if not equals or not key:
            raise ConfigError(f"report rule '{override}' is not KEY=VALUE (e.g. knockout.area_margin=0.2)")
        known = OmegaConf.select(defaults, key, default=None)
        if known is None or OmegaConf.is_config(known):
            raise ConfigError(f"unknown report rule '{key}'; sections: {', '.join(defaults)} "
                              "(conf/report_rules/default.yaml)")
        try:
            config = OmegaConf.merge(config, OmegaConf.from_dotlist([f"{key}={value}"]))
        except Exception as error:  # noqa: BLE001  (OmegaConf's grammar errors)
            raise ConfigError(f"report rule '{override}': {str(error).splitlines()[0]}") from None
    values = OmegaConf.to_container(config, resolve=True)
    _check(values, defaults)
    return Rules(values)


def _check(values: dict, defaults) -> None:
    for section in defaults:
        if not isinstance(values.get(section), dict):
            raise ConfigError(f"report rules: section '{section}' is missing")
        unknown = [] if section == "thesis_setup" else sorted(set(values[section]) - set(defaults[section]))
        if unknown:
            raise ConfigError(f"unknown report rule '{section}.{unknown[0]}'")
    for name, (kind, low, high) in _LIMITS.items():
        section, key = name.split(".")
        value = values[section].get(key)
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not numeric or (kind == _INTEGER and float(value) != int(value)) or not low <= value <= high:
            raise ConfigError(f"report rule {name} must be {kind} in [{low}, {high}], got {value!r}")
        if kind == _INTEGER:
            values[section][key] = int(value)
    if values["knockout"]["after_more"] < values["knockout"]["after"]:
        raise ConfigError("report rule knockout.after_more must be at least knockout.after")
    if values["scales"]["partly_ratio"] > values["scales"]["ratio"]:
        raise ConfigError("report rule scales.partly_ratio must be at most scales.ratio")
