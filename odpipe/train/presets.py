"""odpipe's presets, registered as Model Garden experiments.

A preset is an experiment like any other (`exp_factory.get_exp_config("retinanet-mobilenetv2")`):
its factory returns Model Garden's base experiment with the preset's architecture, input size,
batch size, step count, warmup + cosine schedule, augmentation and the published checkpoint it
starts from. `--model` accepts a preset or any registered detection experiment and reads its
defaults from that experiment's config, with no special case for presets.

Published starting points (Model Garden, see the README for licences):
- MobileNetV2 (width 1.0) ImageNet classifier: gs://tf_model_garden/vision/mobilenet/v2_1.0_float/ckpt-180648
  (Model Garden's own object-detection/instance-segmentation tutorials start from it).
- ResNet-50 ImageNet classifier: gs://cloud-tpu-checkpoints/vision-2.0/resnet50_imagenet/ckpt-28080
  (Model Garden's own default for `retinanet_resnetfpn_coco`).
Both are classification checkpoints: the backbone is restored (`init_checkpoint_modules:
backbone`), the FPN and the heads start fresh, sized for the label map.
"""

from __future__ import annotations

import dataclasses

# Model Garden is imported inside the functions that register or read experiments: it loads TensorFlow
# (seconds), which `odpipe train --help` and the settings check do not need.

MOBILENETV2_IMAGENET = "gs://tf_model_garden/vision/mobilenet/v2_1.0_float/ckpt-180648"
RESNET50_IMAGENET = "gs://cloud-tpu-checkpoints/vision-2.0/resnet50_imagenet/ckpt-28080"
# A COCO-trained RetinaNet R50-FPN is published too, as a tarball (not readable in place):
# https://storage.googleapis.com/tf_model_garden/vision/retinanet/retinanet-resnet50fpn.tar.gz
# (extract it, then --init-checkpoint DIR --init-checkpoint-modules backbone,decoder).
RESNET50FPN_COCO_TARBALL = "gs://tf_model_garden/vision/retinanet/retinanet-resnet50fpn.tar.gz"


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named starting point: a Model Garden base experiment plus odpipe's defaults for it."""

    experiment: str
    image_size: int
    batch_size: int
    steps: int
    learning_rate: float
    warmup_fraction: float
    aug_hflip: bool
    aug_scale_min: float
    aug_scale_max: float
    init_checkpoint: str
    init_checkpoint_modules: str
    overrides: dict
    description: str
    # Applied when the run starts from scratch (--init-checkpoint none), before the user's overrides:
    # the architecture that trains best per CPU-minute without a checkpoint to match.
    scratch_overrides: dict = dataclasses.field(default_factory=dict)
    scratch_warmup_fraction: float | None = None  # the warmup's share of the steps from scratch (None: warmup_fraction)
    mosaic: float = 0.0  # share of training images made mosaics of four (odpipe.modeling.mosaic)
    # XLA-compile the train step. Off for both presets: on the 2-core CPU the CPU preset's XLA step ran
    # at 0.09x the plain one (0.53 vs 5.78 steps/s, `python -m odpipe.bench.steps`, one run); on GPUs
    # Model Garden's own `runtime.enable_xla` is the switch (`--jit-compile` forces it on any device).
    jit_compile: bool = False


PRESETS: dict[str, Preset] = {
    # MobileNetV2 at width 1.0: the published ImageNet checkpoint's shape. On a laptop CPU it trains in minutes.
    "retinanet-mobilenetv2": Preset(
        experiment="retinanet",
        image_size=256,
        batch_size=8,
        steps=1500,
        learning_rate=0.08,
        warmup_fraction=0.05,
        aug_hflip=True,
        aug_scale_min=0.8,
        aug_scale_max=1.25,
        init_checkpoint=MOBILENETV2_IMAGENET,
        init_checkpoint_modules="backbone",
        overrides={
            "model": {
                "min_level": 3,
                "max_level": 6,
                "anchor": {"num_scales": 2, "aspect_ratios": [0.5, 1.0, 2.0], "anchor_size": 3.0},
                "backbone": {"type": "mobilenet", "mobilenet": {"model_id": "MobileNetV2", "filter_size_scale": 1.0}},
                "decoder": {"type": "fpn", "fpn": {"num_filters": 64, "use_separable_conv": True}},
                "head": {"num_convs": 2, "num_filters": 64, "use_separable_conv": True},
                "norm_activation": {"activation": "relu6", "norm_momentum": 0.97, "use_sync_bn": False},
                "detection_generator": {"max_num_detections": 100, "pre_nms_top_k": 1000},
            },
            "losses": {"l2_weight_decay": 4e-5},
        },
        description="RetinaNet, MobileNetV2 (ImageNet; MobileNetV4-Conv-Small x0.5 from scratch) + separable FPN, "
                    "input size from the data: the CPU / phone detector",
        # From scratch there is no checkpoint shape to match, so the backbone that learns most per CPU-minute:
        # MobileNetV4-Conv-Small at width x0.5. On 2 CPU cores, 256 px, batch 8: 9.22 steps/s against 5.64
        # for MobileNetV2 x0.5 and 3.38 for x1.0 (`python -m odpipe.bench.steps`, one run); on the raccoon
        # photos, 10 minutes from scratch with mosaic at 128 px: mAP@0.5 0.881 against 0.804 for MobileNetV2
        # x0.5 (`python -m odpipe.bench.minutes`, one run each). See the README's ten-minute table.
        scratch_overrides={"model": {"backbone": {"mobilenet": {"model_id": "MobileNetV4ConvSmall",
                                                                "filter_size_scale": 0.5}}}},
        # Half the training images as mosaics of four: on the raccoon photos, 10 minutes from scratch at
        # 128 px, mAP@0.5 0.804 with it against 0.695 without (`python -m odpipe.bench.minutes`, one run each).
        mosaic=0.5,
        # A fifth of the steps warming up from scratch (5 % was 25-30 steps in a 5-minute run): on the crowded
        # set at 5 minutes, mAP@0.5 0.861 / 0.794 / 0.765 in three runs against 0.840 / 0.670 / 0.638 / 0.446
        # in four with 5 %; level within the runs' spread at 10 minutes on all three benchmark sets
        # (`python -m odpipe.bench.minutes`; the README's ten-minute section).
        scratch_warmup_fraction=0.2,
    ),
    # The standard RetinaNet for GPUs (mixed float16) and TPUs (bfloat16).
    "retinanet-resnet50fpn": Preset(
        experiment="retinanet_resnetfpn_coco",
        image_size=640,
        batch_size=16,
        steps=20000,
        learning_rate=0.02,
        warmup_fraction=0.02,
        aug_hflip=True,
        aug_scale_min=0.8,
        aug_scale_max=1.2,
        init_checkpoint=RESNET50_IMAGENET,
        init_checkpoint_modules="backbone",
        overrides={"model": {"norm_activation": {"use_sync_bn": False}}, "losses": {"l2_weight_decay": 1e-4}},
        description="RetinaNet, ResNet-50 (ImageNet) + FPN, 640 px: the standard GPU/TPU detector",
    ),
}
DEFAULT_PRESET = "retinanet-mobilenetv2"


def schedule(steps: int, learning_rate: float, warmup_fraction: float) -> dict:
    """SGD with momentum, linear warmup then cosine decay to 1% of the peak, ending at `steps`."""
    warmup = max(1, int(steps * warmup_fraction))
    return {
        "optimizer": {"type": "sgd", "sgd": {"momentum": 0.9}},
        "learning_rate": {
            "type": "cosine",
            "cosine": {"initial_learning_rate": learning_rate, "decay_steps": max(steps, 1), "alpha": 0.01},
        },
        "warmup": {"type": "linear", "linear": {"warmup_steps": warmup, "warmup_learning_rate": learning_rate * 0.05}},
    }


def preset_config(name: str):
    """The full `ExperimentConfig` of preset `name` (what its registered factory returns)."""
    from official.core import exp_factory

    preset = PRESETS[name]
    config = exp_factory.get_exp_config(preset.experiment)
    config.override({"task": preset.overrides}, is_strict=True)
    config.override(
        {
            "task": {
                "model": {"input_size": [preset.image_size, preset.image_size, 3]},
                "init_checkpoint": preset.init_checkpoint,
                "init_checkpoint_modules": preset.init_checkpoint_modules,
                "annotation_file": None,
                "train_data": {
                    "global_batch_size": preset.batch_size,
                    "parser": {"aug_rand_hflip": preset.aug_hflip, "aug_scale_min": preset.aug_scale_min,
                               "aug_scale_max": preset.aug_scale_max},
                },
                "validation_data": {"global_batch_size": min(preset.batch_size, 8)},
            },
            "trainer": {
                "train_steps": preset.steps,
                "optimizer_config": schedule(preset.steps, preset.learning_rate, preset.warmup_fraction),
            },
        },
        is_strict=True,
    )
    return config


_registered = False


def register_presets() -> None:
    """Register every preset with Model Garden's experiment registry (once per process)."""
    global _registered
    if _registered:
        return
    from official.core import exp_factory
    from official.vision import registry_imports  # noqa: F401  (registers Model Garden's experiments)

    for name in PRESETS:
        try:
            exp_factory.register_config_factory(name)(lambda name=name: preset_config(name))
        except KeyError:  # already registered (a module reload)
            pass
    _registered = True
