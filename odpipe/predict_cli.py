"""`odpipe predict`: the command line of odpipe.predict (in process) and odpipe.predict_beam (`--runner`)."""

from __future__ import annotations

import argparse

from odpipe.errors import UserError
from odpipe.predict import predict
from odpipe.records.cli import add_beam_arguments, beam_args_of

# Imported inside functions: odpipe.predict_beam (Apache Beam: about a second) only with --runner; logging with it.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (recursive) or globs; local or gs://")
    parser.add_argument("--model", required=True, help="export folder written by `odpipe export -o`, or its model.tflite")
    parser.add_argument("-o", "--output", required=True, help="folder for predictions.json, images/, annotations/")
    parser.add_argument("--threshold", type=float, default=0.5, help="minimum score to keep a detection (default 0.5)")
    parser.add_argument("--voc", action="store_true", help="also write one labelImg (Pascal VOC) XML per image")
    parser.add_argument("--batch-size", type=int, default=8, help="images per model call (default 8)")
    parser.add_argument("--no-draw", action="store_true", help="do not write drawn images")
    parser.add_argument("--runner", choices=("DirectRunner", "DataflowRunner"),
                        help="run as an Apache Beam job (RunInference) on this runner instead of in this process; "
                             "DataflowRunner needs gs:// inputs and -o and the Beam options below")
    add_beam_arguments(parser, "Beam options (with --runner)")


def _run_beam(args: argparse.Namespace) -> dict:
    import logging

    from odpipe.predict_beam import predict_beam

    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    return predict_beam(args.model, args.inputs, args.output, threshold=args.threshold, voc=args.voc,
                        batch_size=args.batch_size, draw=not args.no_draw, runner=args.runner,
                        beam_args=beam_args_of(args))


def run(args: argparse.Namespace) -> int:
    if beam_args_of(args) and not args.runner:
        raise UserError("Beam options need --runner DirectRunner or --runner DataflowRunner")
    if args.runner:
        summary = _run_beam(args)
    else:
        summary = predict(
            args.model, args.inputs, args.output, threshold=args.threshold, voc=args.voc,
            batch_size=args.batch_size, draw=not args.no_draw,
        )
    classes = ", ".join(f"{k}={v}" for k, v in summary["classes"].items()) or "none"
    print(f"predicted {summary['images']} images: {summary['detections']} detections >= {summary['threshold']} ({classes})")
    if summary["unreadable"]:
        print(f"skipped {len(summary['unreadable'])} unreadable image(s):")
        for item in summary["unreadable"][:20]:
            print(f"  {item['file']}: {item['reason']}")
        if len(summary["unreadable"]) > 20:
            print(f"  ... and {len(summary['unreadable']) - 20} more (see predictions.json)")
    if summary.get("prepared"):
        print(f"{len(summary['prepared'])} image(s) repaired or converted for the model, as `odpipe tfrecord` "
              f"would (first: {summary['prepared'][0]['file']}: {summary['prepared'][0]['image']})")
    if summary["voc_boxes_dropped"]:
        print(f"{summary['voc_boxes_dropped']} detection(s) under one pixel were left out of the VOC files")
    print(f"wrote {summary['predictions']}")
    return 0
