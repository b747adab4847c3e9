"""What train checks before it builds a model or writes a file.

- the records: both globs match files that hold examples; every class (id + name) in them is in the
  label map under the same id (a 2-class map over 3-class records, or swapped ids, stop here);
- the model dir: not a file; when it already holds a checkpoint, the new run must be able to resume
  it (same label map, same model architecture), otherwise nothing in it is overwritten;
- the start checkpoint (a preset's published one by default) can be reached.

The records pass reads every record but parses only the class features (`tf.io.parse_example` on
batches of 512): about as fast as reading the files, a small cost next to one training epoch.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import yaml

from odpipe.errors import UserError, first_line
from odpipe.label_map import parse_label_map
from odpipe.records.output import shard_files
from odpipe.storage import tfio
from odpipe.train.config import config_to_yaml

# TensorFlow is imported inside the functions (start-up time: seconds; `odpipe train --help` and the
# settings check import this module).

CLASS_TEXT = "image/object/class/text"
CLASS_LABEL = "image/object/class/label"
RESUMABLE_MODEL_KEYS = ("input_size", "detection_generator")
BOX_KEYS = ("image/object/bbox/xmin", "image/object/bbox/xmax", "image/object/bbox/ymin", "image/object/bbox/ymax")
SIZE_KEYS = ("image/height", "image/width")


def scan_records(pattern: str, flag: str = "--train") -> dict:
    """{"files", "examples", "objects", "classes": Counter{(id, name): boxes}} of the records matching `pattern`."""
    import tensorflow as tf

    try:  # a complete shard set (its summary is the manifest) or a one-line error naming what is wrong
        files = shard_files(pattern)
    except UserError as err:
        raise UserError(f"{flag} {err}") from None
    spec = {CLASS_TEXT: tf.io.VarLenFeature(tf.string), CLASS_LABEL: tf.io.VarLenFeature(tf.int64),
            **{key: tf.io.VarLenFeature(tf.float32) for key in BOX_KEYS},
            **{key: tf.io.FixedLenFeature([], tf.int64, default_value=0) for key in SIZE_KEYS}}
    examples, classes, sides = 0, Counter(), []
    for path in files:
        dataset = tf.data.TFRecordDataset(path).batch(512).map(lambda r: tf.io.parse_example(r, spec))
        try:
            for batch in dataset:
                labels = tf.sparse.to_dense(batch[CLASS_LABEL], default_value=-1).numpy()
                texts = tf.sparse.to_dense(batch[CLASS_TEXT], default_value=b"").numpy()
                examples += labels.shape[0]
                for row_labels, row_texts in zip(labels, texts):
                    n = int((row_labels >= 0).sum())
                    names = [t.decode("utf-8", "replace") for t in row_texts[:n]] if row_texts.size else []
                    names += [""] * (n - len(names))
                    classes.update(zip((int(v) for v in row_labels[:n]), names))
                sides.append(relative_box_sides(batch))
        except tf.errors.OpError as err:
            raise UserError(
                f"{path}: not readable TFRecords of tf.train.Example ({first_line(err, 120)}); "
                "rewrite them with `odpipe tfrecord`"
            ) from None
    return {"files": files, "examples": examples, "objects": sum(classes.values()), "classes": classes,
            "box_sides": np.concatenate(sides) if sides else np.zeros(0, np.float32)}


def relative_box_sides(batch) -> np.ndarray:
    """Each box's side (square root of its area, in pixels) over its image's longer side: at input size S
    (the longer side resized to S, as Model Garden's parsers do) a box is `side * S` pixels across."""
    import tensorflow as tf

    xmin, xmax, ymin, ymax = (tf.sparse.to_dense(batch[key]).numpy() for key in BOX_KEYS)
    height = batch["image/height"].numpy()[:, None].astype(np.float64)
    width = batch["image/width"].numpy()[:, None].astype(np.float64)
    present = (xmax > xmin) & (ymax > ymin) & (height > 0) & (width > 0)
    area = np.clip(xmax - xmin, 0, None) * width * np.clip(ymax - ymin, 0, None) * height
    sides = np.sqrt(area) / np.maximum(np.maximum(height, width), 1)
    return sides[present].astype(np.float32)


def check_records(scan: dict, label_map: dict[int, str], label_map_path: str, flag: str, pattern: str) -> None:
    """One-line error when the records are empty or hold a class the label map lacks or names otherwise."""
    if not scan["examples"]:
        raise UserError(
            f"{flag} {pattern}: {len(scan['files'])} file(s) but 0 examples; every image was rejected when they were "
            "written (see the records' .summary.json): fix --images-dir or the CSV and rerun `odpipe tfrecord`"
        )
    if not scan["objects"]:
        raise UserError(
            f"{flag} {pattern}: {scan['examples']} images but no boxes; there is nothing to "
            f"{'learn' if flag == '--train' else 'measure mAP on'}: check the CSV the records were written from"
        )
    for (class_id, name), boxes in sorted(scan["classes"].items()):
        if class_id not in label_map:
            listed = ", ".join(f"{i}={n!r}" for i, n in sorted(label_map.items()))
            raise UserError(
                f"{label_map_path}: no id {class_id} ({name!r}, {boxes} box(es) in {flag} records); it lists {listed}: "
                "train with the label map the records were written with, or rewrite the records with this one"
            )
        if name and name != label_map[class_id]:
            raise UserError(
                f"{label_map_path}: id {class_id} is {label_map[class_id]!r} but the {flag} records call it {name!r}; "
                "train with the label map the records were written with, or rewrite the records with this one"
            )


def check_model_dir(model_dir: str, config, label_map: dict[int, str]) -> int:
    """The step of the checkpoint a run into `model_dir` resumes (0 when none); refuses what cannot resume."""
    import tensorflow as tf
    fix = (f"use a new --model-dir to start over, or fine-tune from this one: --model-dir NEW "
           f"--init-checkpoint {model_dir} --init-checkpoint-modules backbone,decoder")
    try:
        if tfio.exists(model_dir) and not tfio.is_dir(model_dir):
            raise UserError(f"--model-dir {model_dir}: is a file, not a folder; give a folder path (it is created)")
        latest = tfio.latest_checkpoint(model_dir) if tfio.is_dir(model_dir) else None
        if not latest:
            return 0
        saved_map_path = f"{model_dir}/label_map.pbtxt"
        if tfio.exists(saved_map_path):
            saved_map = parse_label_map(tfio.read_text(saved_map_path), saved_map_path)
            if saved_map != label_map:
                added = sorted(set(label_map.items()) ^ set(saved_map.items()))
                raise UserError(
                    f"--model-dir {model_dir}: its checkpoint was trained with another label map "
                    f"({len(saved_map)} classes, now {len(label_map)}; differs in {added[:3]}); {fix}"
                )
        saved_cfg_path = f"{model_dir}/config.yaml"
        if tfio.exists(saved_cfg_path):
            saved = (yaml.safe_load(tfio.read_text(saved_cfg_path)) or {}).get("task", {}).get("model", {})
            new = yaml.safe_load(config_to_yaml(config))["task"]["model"]
            for key in RESUMABLE_MODEL_KEYS:  # no variables depend on these: a resumed run may change them
                saved.pop(key, None)
                new.pop(key, None)
            diff = _first_difference(saved, new, "task.model")
            if diff:
                raise UserError(f"--model-dir {model_dir}: its checkpoint has another model ({diff}); {fix}")
        step = os.path.basename(latest).rsplit("-", 1)[-1]
        return int(step) if step.isdigit() else 1
    except tf.errors.OpError as err:
        raise UserError(f"--model-dir {model_dir}: cannot read it ({first_line(err, 160)}); check the path") from None


def _first_difference(old, new, where: str) -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            diff = _first_difference(old.get(key), new.get(key), f"{where}.{key}")
            if diff:
                return diff
        return None
    return None if old == new else f"{where}: {old!r} -> {new!r}"


def check_writable(model_dir: str) -> None:
    """Create `model_dir`; a one-line error when that is impossible (a file in the way, no permission)."""
    import tensorflow as tf

    try:
        tfio.makedirs(model_dir)
        probe = f"{model_dir}/.odpipe-write-test"
        tfio.write_text(probe, "ok")
        tfio.remove(probe)
    except (tf.errors.OpError, OSError) as err:
        raise UserError(f"--model-dir {model_dir}: cannot write there ({first_line(err, 160)}); "
                        "choose a folder you can write") from None


def check_init_checkpoint(start: dict) -> None:
    """The start checkpoint exists and can be read; a one-line error naming the URI otherwise."""
    import tensorflow as tf

    uri = start.get("checkpoint")
    if not uri:
        return
    hint = "pass --init-checkpoint none to train from scratch, or a local copy (--init-checkpoint DIR)"
    what = "the preset's pretrained checkpoint" if start.get("source") == "default" else "the init checkpoint"
    try:
        found = tfio.exists(uri + ".index")
    except tf.errors.OpError as err:
        raise UserError(f"{uri}: cannot reach {what} ({first_line(err, 120)}); {hint}") from None
    if not found:
        raise UserError(f"{uri}: {what} is not there (no {os.path.basename(uri)}.index); {hint}")
