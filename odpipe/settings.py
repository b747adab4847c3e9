"""A pipeline run's settings: checked before the first task does any work, and fingerprinted.

`odpipe run` checks them in the front end, before kfp starts; on Vertex AI and Kubeflow the
first task (the fingerprint, never cached) checks them, so a wrong preset, an override that does
not apply, an unreachable start checkpoint, an unwritable model home or a number out of range
fails in seconds with one line, never after the data stages and never retried.

The settings that shape the trained model (`SHAPING`) are hashed into the run's fingerprint, so
"unchanged" means the same data *and* the same recipe; the gate settings (min_map, margin) only
decide the blessing and are not compared (the "unchanged" message says so; force=true retrains).

Config overrides are a file or YAML text by one rule (`odpipe.train.config.overrides_kind`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from odpipe import storage
from odpipe.errors import UserError
from odpipe.label_map import read_label_map
from odpipe.model_home import check_writable
from odpipe.train.budget import check_budget
from odpipe.train.checks import check_init_checkpoint
from odpipe.train.config import apply_overrides, check_image_size, experiment_config, init_start, overrides_kind

KEYWORDS = {"init_checkpoint": ("none", "default")}  # values of path parameters that are not paths
TFLITE_KINDS = ("int8", "fp16", "float", "none")
SHAPING = ("model", "steps", "batch_size", "image_size", "init_checkpoint", "config_overrides", "warm_start",
           "time_budget", "existing_label_map", "eval_fraction", "seed", "strict", "tflite")


@dataclass(frozen=True)
class Settings:
    """The pipeline parameters a run is checked against (defaults: the pipeline's)."""

    model: str = "retinanet-mobilenetv2"
    steps: int = 0
    batch_size: int = 0
    image_size: int = 0
    init_checkpoint: str = "default"
    config_overrides: str = ""
    warm_start: bool = False
    time_budget: float = 0.0
    mosaic: float = -1.0  # share of training images made mosaics; -1: the preset's
    existing_label_map: str = ""
    eval_fraction: float = 0.2
    seed: int = 0
    strict: bool = False
    tflite: str = "int8"
    min_map: float = 0.0
    margin: float = 0.0
    model_home: str = ""
    data_checks: str = "warn"

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Settings:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names and v is not None})

    def fingerprint(self) -> str:
        """A hash of the settings that shape the model (file contents for the files among them)."""
        shaped = {name: getattr(self, name) for name in SHAPING}
        if self.mosaic >= 0:  # hashed only when set, so that runs from before the parameter keep their fingerprint
            shaped["mosaic"] = self.mosaic
        for name in ("existing_label_map", "config_overrides"):
            value = shaped[name]
            if value and (name == "existing_label_map" or overrides_kind(value) == "path"):
                try:
                    shaped[name] = hashlib.sha256(storage.read_bytes(value)).hexdigest()
                except OSError:
                    pass  # check() reports it
        return hashlib.sha256(json.dumps(shaped, sort_keys=True).encode()).hexdigest()[:20]

    def check(self, champion_checkpoint: str = "") -> None:
        """Raises UserError (one line naming the parameter, the problem and the fix) for the first bad setting."""
        self.check_numbers()
        self.check_files()
        self.check_model(champion_checkpoint)

    def check_numbers(self) -> None:
        for name in ("steps", "batch_size", "image_size", "seed"):
            _whole(name, getattr(self, name))
        _between("eval_fraction", self.eval_fraction, 0, 1, closed=False)
        _between("min_map", self.min_map, 0, 1)
        _between("margin", self.margin, 0, 1)
        if self.time_budget:  # 0: no budget (the pipeline's default); else what the measurement can honour
            check_budget(self.time_budget)
        if self.mosaic != -1 and not (_is_number(self.mosaic) and 0 <= self.mosaic <= 1):
            raise UserError(f"--mosaic {self.mosaic}: must be a share in [0, 1] (0 off, 1 every training image) or -1 "
                            "for the preset's")
        if self.data_checks not in ("warn", "fail"):
            raise UserError(f"--data-checks {self.data_checks}: use warn (report and go on) or fail (stop before training)")
        if self.tflite not in TFLITE_KINDS:
            raise UserError(f"--tflite {self.tflite}: unknown kind; use one of {', '.join(TFLITE_KINDS)}")
        if self.image_size and self.image_size % 32:  # the model's own multiple (64 for the presets): check_model
            raise UserError(f"--image-size {self.image_size}: must be a multiple of 32 (e.g. "
                            f"{max(32, round(self.image_size / 32) * 32)}); 0 to choose it from the data")

    def check_files(self) -> None:
        if self.existing_label_map:
            read_label_map(self.existing_label_map)  # one-line UserError naming the file
        if self.config_overrides and overrides_kind(self.config_overrides) == "path" \
                and not storage.is_file(self.config_overrides):
            raise UserError(f"--config-overrides {self.config_overrides}: file not found; pass a YAML file or YAML "
                            "text (e.g. 'trainer: {train_steps: 500}')")
        if self.model_home:
            check_writable(self.model_home)

    def check_model(self, champion_checkpoint: str = "") -> None:
        """The preset or experiment exists, the overrides apply to it, and the start checkpoint is reachable."""
        config = experiment_config(self.model)
        if self.config_overrides:
            apply_overrides(config, self.config_overrides)
        if self.image_size:
            check_image_size(self.image_size, config.task.model)
        if self.warm_start and champion_checkpoint:
            return  # the model in service's checkpoint is the start (warm start wins)
        task = config.task
        check_init_checkpoint(init_start(self.init_checkpoint, None, task.init_checkpoint or None,
                                         task.init_checkpoint_modules))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _whole(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{_flag(name)} {value}: must be a whole number >= 0 (0 for the default)")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _between(name: str, value: Any, low: float, high: float, closed: bool = True) -> None:
    ok = _is_number(value)
    ok = ok and (low <= value <= high if closed else low < value < high)
    if not ok:
        bounds = f"[{low:g}, {high:g}]" if closed else f"({low:g}, {high:g})"
        raise UserError(f"{_flag(name)} {value}: must be a number in {bounds}")
