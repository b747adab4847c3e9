"""`odpipe train`: the command-line wrapper over `odpipe.train.train`."""

from __future__ import annotations

import argparse
import logging
import sys

from odpipe import cli
from odpipe.train.config import AUG_TYPES, INIT_MODULES
from odpipe.train.presets import DEFAULT_PRESET, PRESETS
from odpipe.train.trainer import train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", required=True, help="train TFRecords glob (local or gs://)")
    parser.add_argument("--eval", required=True, help="eval TFRecords glob (local or gs://)")
    parser.add_argument("--label-map", required=True, help="label_map.pbtxt the records were written with")
    parser.add_argument("--model-dir", required=True, help="checkpoints, summaries, config.yaml (local or gs://)")
    parser.add_argument(
        "--model", default=DEFAULT_PRESET,
        help=f"preset ({', '.join(PRESETS)}) or a registered Model Garden detection experiment (default {DEFAULT_PRESET})",
    )
    parser.add_argument("--image-size", type=int, help="square input size in pixels, a multiple of 2**max_level (64 for the presets; "
                        "default: chosen from the boxes)")
    parser.add_argument("--batch-size", type=int, help="global batch size (preset default)")
    parser.add_argument("--steps", type=int, help="total training steps (preset default; wins over --time-budget)")
    parser.add_argument("--time-budget", type=float, metavar="MINUTES",
                        help="size the steps (and schedule) to end within MINUTES, evaluations included")
    parser.add_argument("--learning-rate", type=float, help="peak learning rate of the warmup+cosine schedule")
    parser.add_argument("--eval-interval", type=int, help="steps between evaluations (default steps/5, >= 100; 3 evaluations in a --time-budget)")
    parser.add_argument("--checkpoint-interval", type=int, help="steps between checkpoints (default = eval interval)")
    parser.add_argument("--eval-steps", type=int, help="eval batches per evaluation (default: all eval records)")
    parser.add_argument("--early-stopping", type=int, default=0, metavar="P",
                        help="stop after P evaluations without better mAP@0.5 (default 0 = off)")
    parser.add_argument(
        "--init-checkpoint",
        help="start: 'default' (the preset's published pretrained checkpoint; needs bucket access), 'none' "
             "(random weights) or a checkpoint folder, prefix, .index or .data-* file (default: default)",
    )
    parser.add_argument("--init-checkpoint-modules", choices=INIT_MODULES,
                        help="what to restore: all, backbone or backbone,decoder (default: the preset's, or all "
                             "for a checkpoint you give)")
    parser.add_argument("--config", dest="config_overrides", help="YAML of Model Garden overrides, applied strictly")
    parser.add_argument("--strategy", default="auto", choices=["auto", "cpu", "gpu", "mirrored", "tpu"])
    parser.add_argument("--tpu", help="TPU address (with --strategy tpu or auto)")
    flip = parser.add_mutually_exclusive_group()
    flip.add_argument("--hflip", dest="aug_hflip", action="store_true", default=None, help="random horizontal flips")
    flip.add_argument("--no-hflip", dest="aug_hflip", action="store_false", help="no horizontal flips")
    parser.add_argument("--aug-scale-min", type=float, help="scale jitter lower bound (preset default)")
    parser.add_argument("--aug-scale-max", type=float, help="scale jitter upper bound (preset default)")
    parser.add_argument("--aug-type", choices=list(AUG_TYPES), help="Model Garden AutoAugment/RandAugment policy")
    parser.add_argument("--mosaic", type=float, metavar="P",
                        help="share of training images made mosaics of four (0 = off, 1 = all; preset default)")
    jit = parser.add_mutually_exclusive_group()
    jit.add_argument("--jit-compile", dest="jit_compile", action="store_true", default=None,
                     help="compile the train step with XLA (preset default)")
    jit.add_argument("--no-jit-compile", dest="jit_compile", action="store_false", help="no XLA compilation")
    parser.add_argument("--verbose", action="store_true", help="also print Orbit's full summary dicts")


def run(args: argparse.Namespace) -> int:
    if not args.verbose:
        logging.getLogger("absl").setLevel(logging.WARNING)
    options = {
        k: getattr(args, k)
        for k in ("learning_rate", "eval_interval", "checkpoint_interval", "eval_steps", "init_checkpoint_modules",
                  "aug_hflip", "aug_scale_min", "aug_scale_max", "aug_type", "mosaic", "jit_compile", "early_stopping",
                  "time_budget")
        if getattr(args, k) is not None
    }
    # as the process's own command, the input pipeline is left to the process's end, which odpipe makes
    # immediate (cli.exit_now): its teardown took 45-56 s in some 10-minute runs, inside the budget
    release = not cli.PROCESS_ENTRY
    result = train(
        args.train, args.eval, args.label_map, args.model_dir, model=args.model, image_size=args.image_size,
        batch_size=args.batch_size, steps=args.steps, init_checkpoint=args.init_checkpoint,
        config_overrides=args.config_overrides, strategy=args.strategy, tpu=args.tpu, verbose=args.verbose,
        started=cli.STARTED, release_inputs=release, **options,
    )
    if not release:
        cli.EXIT_NOW.add("train")
    best = result["best"] or {}
    loss = result["loss"] if result["loss"] is not None else float("nan")
    print(
        f"trained to step {result['step']} in {result['model_dir']} "
        f"(loss {loss:.4f}; best mAP@0.5 {best.get('value', float('nan')):.3f} at step {best.get('step')})",
        file=sys.stdout,
    )
    return 0
