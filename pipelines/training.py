"""The training pipeline: wiring only.

annotations -> CSV -> split -> label map -> TFRecords (train, eval; Beam) -> train -> export
-> evaluate -> [blessed] publish

`build_pipeline(image, trainer_image)` returns the pipeline with those component images; images
are chosen there (by `odpipe compile --image ...`), never read from the environment.
"""

from typing import List, Optional

from kfp import dsl

from components import stages

PIPELINE_NAME = "odpipe-training"


def build_pipeline(
    image: Optional[str] = None,
    trainer_image: Optional[str] = None,
    trainer_memory: str = "32G",
    trainer_cpu: str = "8",
    beam_memory: str = "8G",
):
    """The training pipeline built with these component images and trainer resources.

    Args:
        image: CPU image for the data, evaluation, export and publish stages (default `odpipe:VERSION`).
        trainer_image: GPU image for the trainer (default `odpipe-gpu:VERSION`).
        trainer_memory: Memory limit of the trainer task.
        trainer_cpu: CPU limit of the trainer task.
        beam_memory: Memory limit of the TFRecord (Beam launcher / DirectRunner) tasks.
    """
    ops = stages.build(image, trainer_image)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="labelImg annotations -> TFRecords -> Model Garden detector -> COCO evaluation -> gated export.",
    )
    def training_pipeline(
        annotations: str,
        images: str,
        eval_fraction: float = 0.2,
        seed: int = 0,
        existing_label_map: str = "",
        strict: bool = False,
        model: str = "retinanet-mobilenetv2",
        steps: int = 0,
        batch_size: int = 0,
        image_size: int = 0,
        init_checkpoint: str = "",
        config_overrides: str = "",
        min_map: float = 0.0,
        baseline: str = "",
        tflite: bool = True,
        publish_to: str = "",
        beam_runner: str = "DirectRunner",
        beam_args: List[str] = [],  # noqa: B006 (a KFP default, never mutated)
        shards: int = 0,
        accelerator_type: str = "NVIDIA_TESLA_T4",
        accelerator_count: int = 1,
    ):
        """Trains, evaluates and (if blessed) publishes a detector from labelImg annotations.

        Args:
            annotations: Folder of labelImg XML files (gs:// URI or local path).
            images: Folder of the images the XML files name (gs:// URI or local path).
            eval_fraction: Fraction of images held out for evaluation.
            seed: Seed of the train/eval split.
            existing_label_map: Label map of the previous model, to keep class ids stable; empty for none.
            strict: Fail on any annotation warning or dropped box instead of reporting it.
            model: Model preset ("retinanet-mobilenetv2", "retinanet-resnet50fpn") or Model Garden experiment.
            steps: Training steps; 0 for the preset's default.
            batch_size: Global batch size; 0 for the preset's default.
            image_size: Input size in pixels; 0 for the preset's default.
            init_checkpoint: Checkpoint to initialise from; empty for none.
            config_overrides: Model Garden config overrides (YAML path or text); empty for none.
            min_map: Minimum mAP (0.5:0.95) to bless the model; 0 for no threshold.
            baseline: metrics.json of the current model; the new one must not be worse. Empty for none.
            tflite: Also export model.tflite.
            publish_to: Extra folder to copy a blessed export to (e.g. gs://B/models/current); empty for none.
            beam_runner: Beam runner of the TFRecord stage ("DirectRunner" or "DataflowRunner").
            beam_args: Extra Beam options, e.g. ["--project=P", "--region=R", "--temp_location=gs://B/tmp"].
            shards: TFRecord shards per side; 0 to size them from the data.
            accelerator_type: Trainer accelerator, e.g. NVIDIA_TESLA_T4, NVIDIA_L4, NVIDIA_TESLA_A100.
            accelerator_count: Number of trainer accelerators.
        """
        csv_task = ops.annotations_to_csv(annotations=annotations, images=images, strict=strict)
        split_task = ops.split(
            labels=csv_task.outputs["labels"], images=images, eval_fraction=eval_fraction, seed=seed
        )
        label_map_task = ops.label_map(labels=csv_task.outputs["labels"], existing_label_map=existing_label_map)

        record_tasks = {}
        for side in ("train", "eval"):
            task = ops.records(
                splits=split_task.outputs["splits"],
                label_map=label_map_task.outputs["label_map"],
                images=images,
                side=side,
                shards=shards,
                runner=beam_runner,
                beam_args=beam_args,
                dataflow_image=ops.image,
            )
            task.set_display_name(f"records-{side}").set_memory_limit(beam_memory)
            record_tasks[side] = task

        train_task = ops.train(
            train_records=record_tasks["train"].outputs["records"],
            eval_records=record_tasks["eval"].outputs["records"],
            label_map=label_map_task.outputs["label_map"],
            model_preset=model,
            steps=steps,
            batch_size=batch_size,
            image_size=image_size,
            init_checkpoint=init_checkpoint,
            config_overrides=config_overrides,
        )
        (
            train_task.set_accelerator_type(accelerator_type)
            .set_accelerator_limit(accelerator_count)
            .set_memory_limit(trainer_memory)
            .set_cpu_limit(trainer_cpu)
        )

        export_task = ops.export(model=train_task.outputs["model"], checkpoint="best", tflite=tflite)
        eval_task = ops.evaluate(
            exported=export_task.outputs["exported"],
            eval_records=record_tasks["eval"].outputs["records"],
            min_map=min_map,
            baseline=baseline,
        )
        with dsl.If(eval_task.outputs["Output"] == True, name="blessed"):  # noqa: E712 (a KFP condition)
            ops.publish(exported=export_task.outputs["exported"], destination=publish_to)

    return training_pipeline


def pipelines(image: Optional[str] = None, trainer_image: Optional[str] = None) -> dict:
    """Every pipeline of the project by name (compile tests and `odpipe compile` iterate over it)."""
    return {PIPELINE_NAME: build_pipeline(image, trainer_image)}
