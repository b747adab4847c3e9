"""Model Garden detection tasks, made safe for numpy 2.

The crash: Model Garden's RetinaNet parser (`official/vision/dataloaders/retinanet_input.py`)
stores each eval image's ground-truth count as `tf.shape(classes)`, a 1-element vector, so a
batch of them is [batch, 1]. `coco_utils.convert_groundtruths_to_coco_dataset` later calls
`int(num_detections[i][j])` on that 1-element array; numpy 1.25 deprecated converting non-0-d
arrays to Python scalars and numpy 2 raises "only 0-dimensional arrays can be converted to Python
scalars". The fix here reshapes the ground-truth counts to [batch] in `validation_step`, before
they reach the COCO evaluator, in a subclass of whichever task Model Garden registered for the
experiment (the installed library is not touched).
"""

from __future__ import annotations

import tensorflow as tf
from official.core import base_task, task_factory


class Numpy2SafeGroundtruthsMixin:
    """Reshapes `labels['groundtruths']['num_detections']` from [B, 1] to [B] for COCO eval."""

    def validation_step(self, inputs, model, metrics=None):
        features, labels = inputs
        groundtruths = labels.get("groundtruths") if isinstance(labels, dict) else None
        if groundtruths is not None and "num_detections" in groundtruths:
            groundtruths = dict(groundtruths)
            groundtruths["num_detections"] = flatten_counts(groundtruths["num_detections"])
            labels = dict(labels, groundtruths=groundtruths)
        return super().validation_step((features, labels), model, metrics=metrics)


def flatten_counts(counts: tf.Tensor) -> tf.Tensor:
    """Per-image counts as a [batch] vector, whether they come as [batch] or [batch, 1]."""
    counts = tf.convert_to_tensor(counts)
    if counts.shape.rank is not None and counts.shape.rank > 1:
        return tf.reshape(counts, [tf.shape(counts)[0]])
    return counts


_CLASSES: dict[type, type] = {}


def task_class_for(task_config) -> type:
    """The registered Model Garden task class for `task_config`, with the numpy-2 fix mixed in."""
    base = task_factory.get_task_cls(type(task_config))
    if base not in _CLASSES:
        _CLASSES[base] = type(f"Odpipe{base.__name__}", (Numpy2SafeGroundtruthsMixin, base), {})
    return _CLASSES[base]


def build_task(task_config, logging_dir: str | None = None) -> base_task.Task:
    """Instantiate the experiment's detection task (numpy-2-safe evaluation)."""
    return task_class_for(task_config)(task_config, logging_dir=logging_dir)
