"""Training on one host with several NVIDIA GPUs (default: the paper's 10 RTX 2080 Ti).

  python3 launch/gpu_host.py --workdir=runs/vg_gpu10 --vg_dir=/data/vg \
      --features_path=/data/vg/features.tsv --pretrained_dir=/data/vinvl-base [--dry_run] [-- FLAG ...]

Checks that nvidia-smi lists the GPUs, builds the environment (`make install-cuda`: .venv with
jax[cuda12]) and starts `clever_jax.main` in the background under nohup, logging to
WORKDIR/train.log. Run the same command again to resume from WORKDIR/checkpoints/latest.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

import common

MEM_FRACTION = 0.95  # Of each GPU's memory for JAX (its default, 0.75, leaves too little of 11 GB).


def main_command(args: argparse.Namespace) -> str:
    """The training command, in the background under nohup, appending to WORKDIR/train.log."""
    env = {"CUDA_VISIBLE_DEVICES": ",".join(map(str, range(args.num_gpus))), "XLA_CLIENT_MEM_FRACTION": MEM_FRACTION}
    flags = [
        f"--config={args.config}",
        f"--workdir={os.path.abspath(args.workdir)}",
        f"--config.data.vg_dir={os.path.abspath(args.vg_dir)}",
        f"--config.data.features_path={os.path.abspath(args.features_path)}",
        f"--config.model.pretrained_dir={os.path.abspath(args.pretrained_dir)}",
        *args.overrides,
    ]
    log = os.path.join(os.path.abspath(args.workdir), "train.log")
    return (" ".join(f"{k}={v}" for k, v in env.items()) + " nohup .venv/bin/python -m clever_jax.main "
            + shlex.join(flags) + f" < /dev/null >> {shlex.quote(log)} 2>&1 &")


def check_gpus(listing: str, expected: int) -> None:
    """`nvidia-smi -L` prints one "GPU i: NAME (UUID: ...)" line per GPU."""
    gpus = [line for line in listing.splitlines() if line.startswith("GPU ")]
    if len(gpus) < expected:
        sys.exit(f"Expected {expected} GPUs (--num_gpus), nvidia-smi -L lists {len(gpus)}:\n{listing}")


def check_inputs(args: argparse.Namespace) -> None:
    expected = [(args.vg_dir, os.path.isdir, "a folder with image_data.json, objects.json, relationships.json"),
                (args.features_path, os.path.isfile, "the region features TSV"),
                (args.pretrained_dir, os.path.isdir, "a checkpoint folder (config.json, vocab.txt, weights)")]
    for path, exists, what in expected:
        if not exists(path):
            sys.exit(f"{path} not found: expected {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/vg_gpu10.py", help="Config file, relative to the repository.")
    parser.add_argument("--num_gpus", type=int, default=10, help="GPUs to use (the first N).")
    parser.add_argument("--workdir", help="Run folder: records, checkpoints, results, train.log.")
    parser.add_argument("--vg_dir", help="Visual Genome annotations (image_data.json, objects.json, ...).")
    parser.add_argument("--features_path", help="Region features TSV.")
    parser.add_argument("--pretrained_dir", help="Pretrained VinVL-base (or BERT) checkpoint folder.")
    parser.add_argument("--python", default="python3", help="Interpreter (3.11 or newer) that makes .venv.")
    args = common.parse(parser)
    common.require(parser, args, ("workdir", "vg_dir", "features_path", "pretrained_dir"))
    if not args.dry_run:
        check_inputs(args)

    run = common.Runner(args.dry_run)
    listing = run.output("nvidia-smi -L")
    if listing is not None:
        check_gpus(listing, args.num_gpus)
    run(f"make install-cuda PYTHON={shlex.quote(args.python)}")
    run(f"mkdir -p {shlex.quote(os.path.abspath(args.workdir))}")
    run(main_command(args))
    if not args.dry_run:
        print(f"Started; follow it with: tail -f {os.path.join(os.path.abspath(args.workdir), 'train.log')}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
