"""The prelabel task: a folder of new images -> labelImg XML for review, by the model in service.

The loop the project is built around: predictions become labelImg files, a person corrects them in
labelImg, and the corrected folder is fed back to the training pipeline as new annotations.
"""

from __future__ import annotations

from odpipe import storage
from odpipe.champion import Champion
from odpipe.errors import UserError
from odpipe.records.stage import uses_beam
from odpipe.tasks import Result, scalars

# Imported inside functions: odpipe.predict_beam (Apache Beam, TensorFlow) inside the task.


def model_to_use(export: str, model_home: str) -> tuple[str, str]:
    """(export location, what it is) of the model that pre-labels: `export` when given, else the
    model in service of `model_home`; neither, or a home without a model in service: UserError."""
    if export:
        return export, export
    if not model_home:
        raise UserError("prelabel needs a model: pass export (an export folder) or model_home (its model in service)")
    champion = Champion.of_home(model_home)
    if not champion:
        raise UserError(f"{model_home}: no model in service yet (no current.json); publish one with the training "
                        "pipeline, or pass export")
    return champion.export, f"{model_home} version {champion.version}"


def prelabel_task(images: str, output: str, export: str = "", model_home: str = "", threshold: float = 0.5,
                  runner: str = "DirectRunner", beam_args: list[str] | None = None, batch_size: int = 8,
                  draw: bool = False, dataflow_image: str = "") -> Result:
    """Predicts every image under `images` (local or gs://) into `output`: annotations/<name>.xml
    (labelImg), predictions.json, and with `draw` images/<name>.jpg. Beam (RunInference) runs it
    when `runner` is not the DirectRunner or Beam flags are given; else it runs in this process.
    On Dataflow the workers run `dataflow_image` (the odpipe image) unless beam_args name one."""
    model, origin = model_to_use(export, model_home)
    beam_args = list(beam_args or [])
    if runner == "DataflowRunner" and dataflow_image and not any("sdk_container_image" in a for a in beam_args):
        beam_args.append(f"--sdk_container_image={dataflow_image}")
    if uses_beam(runner, beam_args):
        from odpipe.predict_beam import predict_beam

        summary = predict_beam(model, [images], output, threshold=threshold, voc=True, batch_size=batch_size,
                               draw=draw, runner=runner, beam_args=beam_args)
    else:
        from odpipe.predict import predict

        summary = predict(model, [images], output, threshold=threshold, voc=True, batch_size=batch_size, draw=draw,
                          progress=False)
    annotations = storage.join(output, "annotations")
    print(f"pre-labelled {summary['images']} images with {origin}: {summary['detections']} boxes >= {threshold}; "
          f"{len(summary['unreadable'])} unreadable; labelImg files in {annotations}")
    metadata = {**scalars(summary), "model": origin, "unreadable": len(summary["unreadable"]),
                "annotations": annotations, "classes": summary["classes"]}
    return Result({"prelabels": metadata}, summary["images"])
