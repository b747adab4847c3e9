"""Train a detector on TF Model Garden (`official.vision`) from odpipe's TFRecords.

    odpipe train --train 'rec/train-*.tfrecord' --eval 'rec/eval-*.tfrecord' \\
        --label-map label_map.pbtxt --model-dir runs/m1 [--model retinanet-mobilenetv2] \\
        [--steps N | --time-budget MINUTES] [--init-checkpoint default|none|PATH]

The experiment config comes from a preset (registered as a Model Garden experiment, `presets.py`)
or any registered Model Garden detection experiment, is filled in from the label map and the
records (num_classes = max id + 1, input paths, sizes, a warmup + cosine schedule sized to the
steps), then a user YAML override is applied strictly, validated, locked and saved as
MODEL_DIR/config.yaml (`config.py`). Before anything is built or written, the records are checked
against the label map, the model dir for a resumable checkpoint, the start checkpoint for
reachability (`checks.py`). Training runs through Model Garden's task and trainer on an Orbit
controller (`trainer.py`): it starts from the preset's published pretrained checkpoint unless told
otherwise, checkpoints every K steps (a re-run resumes from the latest), writes TensorBoard
summaries, evaluates on the eval records, keeps the best checkpoint by eval mAP@0.5 in
MODEL_DIR/best/ (+ best.json), stops early on request, and can size its steps to a time budget
(`budget.py`). The CLI is in `cli.py`.

Modules: presets, config, start, checks, progress, budget, trainer, cli.
"""

from odpipe.label_map import read_label_map  # noqa: F401  (re-exported for callers of odpipe.train)
from odpipe.train.cli import add_arguments, run  # noqa: F401
from odpipe.train.config import (  # noqa: F401
    AUG_TYPES,
    BEST_METRIC,
    BEST_SUBDIR,
    DEFAULT_CHECKPOINT,
    NO_CHECKPOINT,
    build_config,
    config_to_yaml,
    load_config,
    resolve_checkpoint,
    save_config,
    select_runtime,
)
from odpipe.train.presets import DEFAULT_PRESET, PRESETS, Preset, register_presets  # noqa: F401
from odpipe.train.progress import EarlyStopping  # noqa: F401
from odpipe.train.trainer import run_training, train  # noqa: F401
