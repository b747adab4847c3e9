"""The prelabel pipeline's component (pipelines/prelabel.py): new images -> labelImg XML by the model in service.

See components/stages.py for the rules every component here follows.
"""

from typing import List

from kfp.dsl import Dataset, Output


def prelabel(
    images: str,
    prelabels: Output[Dataset],
    export: str = "",
    model_home: str = "",
    threshold: float = 0.5,
    runner: str = "DirectRunner",
    beam_args: List[str] = [],  # noqa: B006 (a KFP default, never mutated)
    batch_size: int = 8,
    draw: bool = False,
    dataflow_image: str = "",
) -> int:
    """Pre-labels a folder of new images: labelImg XML per image for a person to correct.

    Args:
        images: Folder of new images (gs:// URI or local path; searched recursively).
        prelabels: Folder with annotations/<name>.xml (labelImg), predictions.json (and images/ with draw).
        export: Export folder of the model to use; empty for the model in service of model_home.
        model_home: The model home whose model in service pre-labels (when export is empty).
        threshold: Minimum score for a box to be written.
        runner: Beam runner: "DirectRunner" (in the task) or "DataflowRunner" (RunInference on Dataflow).
        beam_args: Extra Beam options, e.g. ["--project=P", "--region=R", "--temp_location=gs://B/tmp"].
        batch_size: Images per model call.
        draw: Also write each image drawn with its boxes.
        dataflow_image: SDK container image for Dataflow workers; added as --sdk_container_image.

    Returns:
        The number of images pre-labelled.
    """
    from odpipe.tasks import at, record
    from odpipe.tasks.predict import prelabel_task

    result = prelabel_task(images, at(prelabels), export, model_home, threshold, runner, beam_args, batch_size, draw,
                           dataflow_image)
    return record(result, prelabels=prelabels)
