"""The prelabel pipeline: wiring only.

a folder of new images -> the model in service (or a given export) -> labelImg XML per image, for a
person to correct in labelImg and feed back to the training pipeline as new annotations. Beam's
RunInference runs it on Dataflow with beam_runner="DataflowRunner".

    odpipe compile --pipeline prelabel -o prelabel.yaml --image REGISTRY/odpipe:VERSION
"""

from typing import List, Optional

from kfp import dsl

from components import stages

PIPELINE_NAME = "odpipe-prelabel"


def build_pipeline(image: Optional[str] = None, memory: str = "8G"):
    """The prelabel pipeline on the CPU image `image` (default `odpipe:VERSION`)."""
    prelabel_op = stages.build_prelabel(image)
    dataflow_image = image or stages.DEFAULT_IMAGE

    @dsl.pipeline(name=PIPELINE_NAME, description="New images -> labelImg XML by the model in service, for review.")
    def prelabel_pipeline(
        images: str,
        model_home: str = "",
        export: str = "",
        threshold: float = 0.5,
        draw: bool = False,
        beam_runner: str = "DirectRunner",
        beam_args: List[str] = [],  # noqa: B006 (a KFP default, never mutated)
        batch_size: int = 8,
    ):
        """Pre-labels a folder of new images with the model in service.

        Args:
            images: Folder of new images (gs:// URI or local path; searched recursively).
            model_home: The model home whose model in service pre-labels.
            export: An export folder to use instead of the model in service.
            threshold: Minimum score for a box to be written.
            draw: Also write each image drawn with its boxes.
            beam_runner: "DirectRunner" (in the task) or "DataflowRunner" (RunInference on Dataflow workers).
            beam_args: Extra Beam options, e.g. ["--project=P", "--region=R", "--temp_location=gs://B/tmp"].
            batch_size: Images per model call.
        """
        task = prelabel_op(images=images, export=export, model_home=model_home, threshold=threshold,
                           runner=beam_runner, beam_args=beam_args, batch_size=batch_size, draw=draw,
                           dataflow_image=dataflow_image)
        task.set_memory_limit(memory).set_caching_options(False)  # new images under the same folder name

    return prelabel_pipeline
