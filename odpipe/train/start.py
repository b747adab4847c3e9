"""Where a training run starts: the experiment's published checkpoint, a user's checkpoint
(a folder, a prefix, or one of its files: resolved to a prefix), or nothing (from scratch); and
the architecture saved beside an odpipe checkpoint, so fine-tuning rebuilds the model it fits.

TensorFlow is imported inside `resolve_checkpoint` (start-up time: `odpipe train --help` and the
settings check import this module).
"""

from __future__ import annotations

import os
import re

import yaml

from odpipe import storage
from odpipe.errors import UserError, first_line
from odpipe.storage import tfio

INIT_MODULES = ("all", "backbone", "decoder", "backbone,decoder")
NO_CHECKPOINT = "none"  # --init-checkpoint none: train from scratch
DEFAULT_CHECKPOINT = "default"  # --init-checkpoint default: the experiment's published start (the default)

_DATA_SUFFIX = re.compile(r"\.(index|data-\d{5}-of-\d{5})$")


def resolve_checkpoint(path: str) -> str:
    """A checkpoint prefix from a folder, a prefix, or one of its `.index` / `.data-*` files.

    A folder resolves to its latest checkpoint (its `checkpoint` file, else the newest `*.index`).
    A bucket that cannot be reached is a one-line error naming the URI.
    """
    import tensorflow as tf

    path = str(path).rstrip("/")
    try:
        prefix = _DATA_SUFFIX.sub("", path)
        if prefix != path or tfio.exists(prefix + ".index"):
            if not tfio.exists(prefix + ".index"):
                raise UserError(
                    f"{path}: no {os.path.basename(prefix)}.index beside it; give the checkpoint folder or prefix"
                )
            return prefix
        if tfio.is_dir(path):
            latest = tfio.latest_checkpoint(path)
            if latest and tfio.exists(latest + ".index"):
                return latest
            indexes = tfio.glob(path + "/*.index")
            if indexes:
                def step_of(p: str) -> int:
                    m = re.search(r"-(\d+)\.index$", p)
                    return int(m.group(1)) if m else -1

                return max(indexes, key=lambda p: (step_of(p), p))[: -len(".index")]
            raise UserError(f"{path}: folder holds no checkpoint (*.index); give a checkpoint folder, prefix or .index file")
    except tf.errors.OpError as err:
        raise UserError(
            f"{path}: cannot read the checkpoint ({first_line(err, 160)}); check access, or pass "
            f"--init-checkpoint {NO_CHECKPOINT} (train from scratch) or a local copy"
        ) from None
    raise UserError(f"{path}: not a checkpoint folder, prefix, .index or .data-* file; check the path")


def init_start(init_checkpoint: str | None, modules: str | None, default: str | None, default_modules) -> dict:
    """Which start a run uses: {"checkpoint": prefix or None, "modules", "source"}.

    source: "default" (the experiment's published checkpoint), "user" (a path) or "none" (scratch).
    """
    choice = DEFAULT_CHECKPOINT if init_checkpoint in (None, DEFAULT_CHECKPOINT) else str(init_checkpoint)
    if modules is not None and modules not in INIT_MODULES:
        raise UserError(f"--init-checkpoint-modules {modules}: use all, backbone or backbone,decoder")
    if choice.strip().lower() in (NO_CHECKPOINT, "") or (choice == DEFAULT_CHECKPOINT and not default):
        return {"checkpoint": None, "modules": None, "source": "none"}
    if choice == DEFAULT_CHECKPOINT:
        mods = modules or (",".join(default_modules) if isinstance(default_modules, (list, tuple)) else default_modules)
        return {"checkpoint": str(default), "modules": mods or "all", "source": "default"}
    return {"checkpoint": resolve_checkpoint(choice), "modules": modules or "all", "source": "user"}


ARCHITECTURE_KEYS = ("backbone", "decoder", "head", "min_level", "max_level", "anchor", "norm_activation")


def checkpoint_architecture(prefix: str) -> dict:
    """The model architecture (backbone, decoder, head, levels, anchors) of the odpipe config.yaml
    beside a checkpoint (MODEL_DIR/ckpt-N, MODEL_DIR/best/ckpt-N, a model home version's
    checkpoint/), so a checkpoint trained from scratch at another width still fits; {} for a
    checkpoint without one (e.g. a published classifier)."""
    folder = str(prefix).rsplit("/", 1)[0]
    for candidate in (f"{folder}/config.yaml", f"{folder.rsplit('/', 1)[0]}/config.yaml"):
        try:
            doc = yaml.safe_load(storage.read_text(candidate)) or {}
        except (FileNotFoundError, OSError, ValueError, yaml.YAMLError):
            continue
        model = (doc.get("task") or {}).get("model") or {}
        return {k: model[k] for k in ARCHITECTURE_KEYS if k in model}
    return {}
