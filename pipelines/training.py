"""The training pipeline: wiring only.

fingerprint (never cached; checks the settings) -> [data changed] annotations -> CSV -> split ->
data report (checks, drift against the model in service's data) and label map (the model in
service's ids kept) -> TFRecords (train, eval; Beam) -> train -> export -> evaluate (challenger
and champion on the same records) -> [blessed] publish (model home version + current.json)
-> [registry_model] Vertex Model Registry version

`build_pipeline(image, trainer_image, target=...)` returns the pipeline with those component
images for a platform; images are chosen there (by `odpipe compile --image ...`), never read from
the environment.
"""

import inspect
from typing import List, Optional, Sequence

from kfp import dsl

from components import platform, stages
from odpipe import registry

PIPELINE_NAME = "odpipe-training"
TARGETS = ("vertex", "kubeflow", "local")
# The trainer's default accelerator per target: Vertex AI names a machine accelerator, Kubeflow a
# Kubernetes extended resource. The local runner requests none.
DEFAULT_ACCELERATOR = {"vertex": "NVIDIA_TESLA_T4", "kubeflow": "nvidia.com/gpu", "local": ""}
# The pipeline's parameters as `odpipe run -h` shows them: grouped as the data flows.
PARAMETER_GROUPS = {
    "data": ("annotations", "images", "strict", "force"),
    "split": ("eval_fraction", "seed", "existing_label_map", "data_checks"),
    "training": ("model", "steps", "batch_size", "image_size", "init_checkpoint", "warm_start", "time_budget",
                 "mosaic", "config_overrides"),
    "gate": ("min_map", "margin"),
    "publishing": ("model_home", "tflite", "registry_model", "registry_project", "registry_location", "serving_image"),
    "cloud": ("beam_runner", "beam_args", "shards", "accelerator_type", "accelerator_count"),
    "trainer on Vertex AI (a CustomJob)": ("machine_type", "boot_disk_type", "boot_disk_size_gb", "strategy",
                                           "trainer_service_account", "network", "tensorboard",
                                           "base_output_directory"),
    "trainer on Kubeflow (its pod)": ("node_selector", "tolerations"),
}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
# The trainer's parameters that only one platform has: (name, type, default, description).
PLATFORM_PARAMETERS = {
    "vertex": (
        ("machine_type", str, "n1-standard-8", "Trainer machine (Compute Engine type), e.g. n1-standard-8 (with a T4), "
                                               "g2-standard-8 (NVIDIA_L4), a2-highgpu-1g (NVIDIA_TESLA_A100)."),
        ("boot_disk_type", str, "pd-ssd", "Trainer boot disk: pd-ssd, pd-standard, pd-balanced or hyperdisk-balanced."),
        ("boot_disk_size_gb", int, 100, "Trainer boot disk size in GB (at least 100)."),
        ("strategy", str, "STANDARD", "Trainer scheduling: STANDARD, SPOT (preemptible and cheaper; the trainer "
                                      "resumes from its last checkpoint) or FLEX_START."),
        ("trainer_service_account", str, "", "Service account the trainer's CustomJob runs as; empty for the Vertex AI "
                                             "Custom Code Service Agent."),
        ("network", str, "", "VPC network the trainer is peered with (projects/NUMBER/global/networks/NAME); empty for none."),
        ("tensorboard", str, "", "Vertex AI TensorBoard (projects/P/locations/L/tensorboards/ID) that shows the "
                                 "trainer's curves; needs base_output_directory."),
        ("base_output_directory", str, "", "The trainer CustomJob's gs:// output folder (its TensorBoard logs go "
                                           "under logs/); empty for none."),
    ),
    "kubeflow": (
        ("node_selector", dict, {}, 'Node labels the trainer pod must run on, e.g. '
                                    '{"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}; empty for any node.'),
        ("tolerations", list, [GPU_TOLERATION], "Taints the trainer pod tolerates (Kubernetes toleration objects); the "
                                                "default tolerates the nvidia.com/gpu taint of GPU nodes."),
    ),
    "local": (),
}
TRAINER_RETRIES = 3  # preemptions and transient errors; training resumes from its last checkpoint
DATA_RETRIES = 2  # Beam stages rewrite their output atomically, so a retry is safe


def build_pipeline(
    image: Optional[str] = None,
    trainer_image: Optional[str] = None,
    trainer_memory: str = "32G",
    trainer_cpu: str = "8",
    beam_memory: str = "8G",
    target: str = "vertex",
    image_pull_secrets: Sequence[str] = (),
):
    """The training pipeline built with these component images and trainer resources.

    Args:
        image: CPU image for the data, evaluation, export and publish stages (default `odpipe:VERSION`).
        trainer_image: GPU image for the trainer (default `odpipe-gpu:VERSION`).
        trainer_memory: Memory limit of the trainer task.
        trainer_cpu: CPU limit of the trainer task.
        beam_memory: Memory limit of the TFRecord (Beam launcher / DirectRunner) tasks.
        target: "vertex" (the trainer is a Vertex AI CustomJob), "kubeflow" (the trainer pod gets a GPU
            limit, node selector and tolerations), or "local" (no accelerator request: the kfp local
            runner ignores it and, in kfp 2.17, cannot resolve those parameters inside a condition).
            Each target adds its own trainer parameters (`PLATFORM_PARAMETERS`).
        image_pull_secrets: Kubernetes secrets every task pulls its image with (Kubeflow only).
    """
    if target not in TARGETS:
        raise ValueError(f"target {target!r}: use one of {', '.join(TARGETS)}")
    ops = stages.build(image, trainer_image)
    default_accelerator = DEFAULT_ACCELERATOR[target]
    default_serving_image = registry.default_serving_image(image)

    if image_pull_secrets and target != "kubeflow":
        raise ValueError("image pull secrets are Kubernetes secrets: compile with target 'kubeflow'")

    def training_pipeline(
        annotations: str,
        images: str,
        strict: bool = False,
        force: bool = False,
        eval_fraction: float = 0.2,
        seed: int = 0,
        existing_label_map: str = "",
        data_checks: str = "warn",
        model: str = "retinanet-mobilenetv2",
        steps: int = 0,
        batch_size: int = 0,
        image_size: int = 0,
        init_checkpoint: str = "default",
        warm_start: bool = False,
        time_budget: float = 0.0,
        mosaic: float = -1.0,
        config_overrides: str = "",
        min_map: float = 0.0,
        margin: float = 0.0,
        model_home: str = "",
        tflite: str = "int8",
        registry_model: str = "",
        registry_project: str = "",
        registry_location: str = "",
        serving_image: str = default_serving_image,
        beam_runner: str = "DirectRunner",
        beam_args: List[str] = [],  # noqa: B006 (a KFP default, never mutated)
        shards: int = 0,
        accelerator_type: str = default_accelerator,
        accelerator_count: int = 1,
        **trainer_platform,
    ):
        """Retrains a detector when the labelImg data changed; publishes it only if it beats the model in service.

        Args:
            annotations: Folder of labelImg XML files (gs:// URI or local path).
            images: Folder of the images the XML files name (gs:// URI or local path).
            strict: Fail on any annotation warning or dropped box instead of reporting it.
            force: Retrain even when the data, the settings and the model in service are unchanged since the last run.
            eval_fraction: Fraction of images held out for evaluation.
            seed: Seed of the train/eval split.
            existing_label_map: Label map whose class ids to keep; empty for the model in service's (or a new one).
            data_checks: The data report's verdict: "warn" (errors are reported, training goes on) or "fail" (an error
                in the data stops the run before training).
            model: Model preset ("retinanet-mobilenetv2", "retinanet-resnet50fpn") or Model Garden experiment.
            steps: Training steps; 0 for the preset's default.
            batch_size: Global batch size; 0 for the preset's default.
            image_size: Input size in pixels (a multiple of 2**max_level: 64 for the presets); 0 chooses it from the boxes and the model's anchors.
            init_checkpoint: Start of training: "default" (the preset's published pretrained checkpoint), "none" (from scratch) or a checkpoint path.
            warm_start: Fine-tune from the model in service's checkpoint whenever there is one (it wins over init_checkpoint).
            time_budget: Training minutes; the steps are sized to end inside them (0 for none; steps wins when both are given).
            mosaic: Share of training images made mosaics of four (0 off, 1 all); -1 for the preset's (0.5 for retinanet-mobilenetv2).
            config_overrides: Model Garden config overrides: a YAML file (path or gs://) or YAML text (has a newline, "{" or ": "); empty for none.
            min_map: Minimum mAP (0.5:0.95) to bless the model; 0 for no threshold.
            margin: The new mAP must beat the model in service's, on the same eval records, by this much.
            model_home: Where published models live (versions/NNNN/, current.json; gs:// or local); empty for none.
            tflite: model.tflite for phones: "int8" (full-integer, calibrated on the training records), "fp16", "float" or "none".
            registry_model: Vertex AI Model Registry model (id or resource name) to add blessed versions to; empty for none.
            registry_project: Google Cloud project of the registry model.
            registry_location: Vertex AI region of the registry model, e.g. us-central1.
            serving_image: Serving container of the registry model: the project's CPU image (runs `odpipe serve`;
                the default when compiled with --image REGISTRY/odpipe:VERSION) or a Vertex AI prebuilt
                TensorFlow image; empty for Vertex AI's prebuilt TensorFlow 2.15 CPU image.
            beam_runner: Beam runner of the TFRecord stage ("DirectRunner" or "DataflowRunner").
            beam_args: Extra Beam options, e.g. ["--project=P", "--region=R", "--temp_location=gs://B/tmp"].
            shards: TFRecord shards per side; 0 to size them from the data.
            accelerator_type: Trainer accelerator, named as the platform compiled for names it (Vertex AI: an
                accelerator type; Kubeflow: a Kubernetes GPU resource); the default is that platform's.
            accelerator_count: Number of trainer accelerators.
        """
        plan = ops.fingerprint(
            annotations=annotations, images=images, model_home=model_home, force=force, model=model, steps=steps,
            batch_size=batch_size, image_size=image_size, init_checkpoint=init_checkpoint,
            config_overrides=config_overrides, warm_start=warm_start, time_budget=time_budget,
            mosaic=mosaic, existing_label_map=existing_label_map, eval_fraction=eval_fraction, seed=seed, strict=strict,
            tflite=tflite, min_map=min_map, margin=margin, data_checks=data_checks,
        )
        plan.set_caching_options(False)  # it must look at the folders every run
        found = plan.outputs
        with dsl.If(found["Output"] == True, name="data-changed"):  # noqa: E712 (a KFP condition)
            csv_task = ops.annotations_to_csv(
                annotations=annotations, images=images, strict=strict, fingerprint=found["fingerprint"]
            )
            split_task = ops.split(
                labels=csv_task.outputs["labels"], images=images, eval_fraction=eval_fraction, seed=seed
            )
            label_map_task = ops.label_map(
                labels=csv_task.outputs["labels"],
                champion=found["champion"],
                existing_label_map=existing_label_map,
            )
            report_task = ops.data_report(
                labels=csv_task.outputs["labels"],
                splits=split_task.outputs["splits"],
                champion=found["champion"],
                images=images,
                model_preset=model,
                image_size=image_size,
                data_checks=data_checks,
            )
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
                task.set_display_name(f"records-{side}").set_memory_limit(beam_memory).set_retry(DATA_RETRIES)
                record_tasks[side] = task

            train_inputs = dict(
                train_records=record_tasks["train"].outputs["records"],
                eval_records=record_tasks["eval"].outputs["records"],
                label_map=label_map_task.outputs["label_map"],
                champion=found["champion"],
                model_preset=model,
                steps=steps,
                batch_size=batch_size,
                image_size=image_size,
                init_checkpoint=init_checkpoint,
                config_overrides=config_overrides,
                warm_start=warm_start,
                time_budget=time_budget,
                mosaic=mosaic,
            )
            # the target is a build option, not a pipeline parameter: fixed when the pipeline is compiled
            train_task = platform.trainer(ops, target, train_inputs, accelerator_type, accelerator_count,
                                          trainer_platform, trainer_memory, trainer_cpu)
            train_task.after(report_task)  # data_checks="fail": an error in the data stops the run before training
            train_task.set_retry(TRAINER_RETRIES, backoff_duration="60s")  # it resumes from its last checkpoint

            export_task = ops.export(
                model=train_task.outputs["model"],
                calibration_records=record_tasks["train"].outputs["records"],
                checkpoint="best",
                tflite=tflite,
            )
            eval_task = ops.evaluate(
                exported=export_task.outputs["exported"],
                eval_records=record_tasks["eval"].outputs["records"],
                champion=found["champion"],
                min_map=min_map,
                margin=margin,
                model_home=model_home,
                fingerprint=found["fingerprint"],
            )
            with dsl.If(eval_task.outputs["Output"] == True, name="blessed"):  # noqa: E712 (a KFP condition)
                publish_task = ops.publish(
                    exported=export_task.outputs["exported"],
                    model=train_task.outputs["model"],
                    evaluation=eval_task.outputs["evaluation"],
                    plan=found["plan"],
                    data_stats=report_task.outputs["data_stats"],
                    model_home=model_home,
                    run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                )
                with dsl.If(registry_model != "", name="registry"):
                    ops.register(
                        saved_model=publish_task.outputs["saved_model"],
                        version=publish_task.outputs["version"],
                        evaluation=eval_task.outputs["evaluation"],
                        registry_model=registry_model,
                        project=registry_project,
                        location=registry_location,
                        fingerprint=found["fingerprint"],
                        serving_image=serving_image,
                        model_home=model_home,
                    )
        platform.pull_secrets_everywhere(image_pull_secrets)

    return dsl.pipeline(
        name=PIPELINE_NAME,
        description="labelImg annotations -> TFRecords -> Model Garden detector -> champion vs challenger -> model home.",
    )(with_parameters(training_pipeline, PLATFORM_PARAMETERS[target]))


def with_parameters(func, extra: Sequence[tuple]):
    """`func(..., **more)` as a function whose signature (and docstring) also names the `extra`
    parameters (name, type, default, description): KFP reads both to make the pipeline's inputs."""
    signature = inspect.signature(func)
    base = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    added = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=kind)
             for name, kind, default, _ in extra]
    names = [p.name for p in base + added]

    def pipeline(*args, **kwargs):
        return func(**dict(zip(names, args)), **kwargs)

    pipeline.__signature__ = signature.replace(parameters=base + added)
    pipeline.__annotations__ = {p.name: p.annotation for p in base + added}
    pipeline.__name__ = func.__name__
    pipeline.__doc__ = inspect.getdoc(func) + "".join(f"\n    {name}: {doc}" for name, _, _, doc in extra)
    return pipeline


def pipelines(image: Optional[str] = None, trainer_image: Optional[str] = None, target: str = "vertex") -> dict:
    """Every pipeline of the project by name (compile tests and `odpipe compile` iterate over it)."""
    return {PIPELINE_NAME: build_pipeline(image, trainer_image, target=target)}
