"""Labels CSV + images -> sharded TFRecords of `tf.train.Example`.

    odpipe tfrecord train.csv --images-dir images/ --label-map label_map.pbtxt -o records/train

writes `records/train-00000-of-0000N.tfrecord` (read them as `records/train-*.tfrecord`, through
`shard_files`) and, last, `records/train.summary.json`, the manifest of the complete set. Paths
may be local or `gs://`. A local run works in this process on every core; `--runner
DataflowRunner --project P --region R --temp_location gs://B/tmp --sdk_container_image IMAGE`
runs the same per-image functions on Dataflow (Beam's DirectRunner when Beam flags are given).

The package, by concern (the data flow):
  plan        CSV rows -> one item per image (boxes normalised, classes checked) -> shards (pure)
  images      image checks, conversion and repair for TensorFlow's decoder (pure)
  example     one image -> one serialized tf.train.Example (keys: odpipe.schema)
  tfrecord    TFRecord framing and reading
  writer      one shard: items -> prepared on threads -> one TFRecord file; the local run
  transforms  the Beam pipeline (@beam.ptransform_fn), for Dataflow
  output      atomic output (staging folder, commit order, stale clean-up) and `shard_files`
  stage       `convert`, the stage itself; cli: `odpipe tfrecord`
"""

from odpipe.records.cli import add_arguments, run
from odpipe.records.example import image_to_example, process_image
from odpipe.records.images import VERIFY_MODES, Prepared, Rejected, prepare_image
from odpipe.records.output import shard_files
from odpipe.records.plan import default_shards, normalise_box, plan_images, source_id_for
from odpipe.records.stage import convert

__all__ = [
    "VERIFY_MODES", "Prepared", "Rejected", "add_arguments", "convert", "default_shards", "image_to_example",
    "normalise_box", "plan_images", "prepare_image", "process_image", "run", "shard_files", "source_id_for",
]
