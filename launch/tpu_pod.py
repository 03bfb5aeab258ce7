"""Training on a Cloud TPU pod slice: one JAX process per host, all started over gcloud ssh.

  python3 launch/tpu_pod.py STEP --name=NAME --zone=ZONE [flags] [--dry_run] [-- FLAG ...]

Steps (`all` = create, setup, run):
  create   the TPU VM slice (--accelerator_type, --version, --spot).
  setup    on every worker: apt packages (Python 3.11, make, gcsfuse), this repository's HEAD
           (git archive) in ~/clever_jax with `make install-tpu` (.venv with jax[tpu]), and the
           inputs copied from --data_uri to ~/clever_data: vg/ (image_data.json, objects.json,
           relationships.json), features.tsv and checkpoint/ (the pretrained VinVL-base folder).
  run      on every worker: mounts --ckpt_bucket at ~/clever_ckpt (gcsfuse), links
           ~/clever_jax/runs/RUN/checkpoints to ~/clever_ckpt/RUN/checkpoints (orbax needs one
           folder that every process sees) and starts clever_jax.main in the background
           (log: ~/clever_jax/runs/RUN/train.log). Each worker prepares the records on its own
           disk from the same inputs, deterministically. Run it again to resume (also after a
           preemption, on a new slice after create and setup).
  collect  copies worker 0's results (metrics.json, triplets.jsonl, ...) to the bucket, then
           the bucket's RUN folder (checkpoints and results) to --out/RUN here.
  delete   deletes the TPU VM slice.
"""

from __future__ import annotations

import argparse
import re
import shlex

import common

REPO, DATA, MOUNT = "clever_jax", "clever_data", "clever_ckpt"  # In the ssh user's home on every worker.
STEPS = ("create", "setup", "run", "collect", "delete", "all")
NEEDS = {  # Flags each step needs besides --name and --zone.
    "setup": ("data_uri",), "run": ("ckpt_bucket",), "collect": ("ckpt_bucket",), "all": ("data_uri", "ckpt_bucket"),
}
APT = ('echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt '
       'gcsfuse-$(lsb_release -cs) main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list > /dev/null'
       " && curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg"
       " | sudo tee /usr/share/keyrings/cloud.google.asc > /dev/null"
       " && sudo apt-get update -q && sudo apt-get install -y -q make python3.11 python3.11-venv gcsfuse")
# No metadata caching: every worker must see the folders the others create at once.
GCSFUSE = "gcsfuse --implicit-dirs --metadata-cache-ttl-secs=0 --metadata-cache-negative-ttl-secs=0"


def word(value: str) -> str:
    """A TPU, bucket or run name (no gs://): used unquoted in remote paths."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
        raise argparse.ArgumentTypeError(f"{value!r}: use letters, digits, '-', '_' and '.'")
    return value


def gcloud(args: argparse.Namespace, verb: str, *rest: str) -> str:
    project = [f"--project={args.project}"] if args.project else []
    return shlex.join(["gcloud", "compute", "tpus", "tpu-vm", verb, *rest, f"--zone={args.zone}", *project])


def ssh(args: argparse.Namespace, remote: str, worker: str = "all") -> str:
    return gcloud(args, "ssh", args.name, f"--worker={worker}", f"--command={remote}")


def create(args: argparse.Namespace, run: common.Runner) -> None:
    spot = ["--spot"] if args.spot else []
    run(gcloud(args, "create", args.name, f"--accelerator-type={args.accelerator_type}", f"--version={args.version}",
               *spot))


def setup(args: argparse.Namespace, run: common.Runner) -> None:
    archive = f"/tmp/{REPO}-{args.name}.tar.gz"
    run(ssh(args, APT))
    run(f"git archive --format=tar.gz --prefix={REPO}/ -o {archive} HEAD")
    run(gcloud(args, "scp", archive, f"{args.name}:{REPO}.tar.gz", "--worker=all"))
    run(ssh(args, f"tar xzf {REPO}.tar.gz && make -C {REPO} install-tpu PYTHON=python3.11"))
    run(ssh(args, f"mkdir -p {DATA} && gcloud storage rsync --recursive {shlex.quote(args.data_uri)} {DATA}"))


def start(args: argparse.Namespace, run: common.Runner) -> None:
    workdir, shared = f"runs/{args.run}", f"$HOME/{MOUNT}/{args.run}/checkpoints"
    run(ssh(args, f"mkdir -p {MOUNT} && (mountpoint -q {MOUNT} || {GCSFUSE} {shlex.quote(args.ckpt_bucket)} {MOUNT})"
                  f" && mkdir -p {shared} {REPO}/{workdir} && ln -sfn {shared} {REPO}/{workdir}/checkpoints"))
    flags = (f"--config={shlex.quote(args.config)} --workdir={workdir} --config.distributed.enabled=True"
             f" --config.data.vg_dir=$HOME/{DATA}/vg"
             f" --config.data.features_path=$HOME/{DATA}/features.tsv"
             f" --config.model.pretrained_dir=$HOME/{DATA}/checkpoint")
    flags = " ".join([flags, *map(shlex.quote, args.overrides)])
    run(ssh(args, f"cd {REPO} && {{ nohup .venv/bin/python -m clever_jax.main {flags}"
                  f" < /dev/null >> {workdir}/train.log 2>&1 & }}"))


def collect(args: argparse.Namespace, run: common.Runner) -> None:
    results = f"{MOUNT}/{args.run}/results"
    run(ssh(args, f"mkdir -p {results} && find {REPO}/runs/{args.run} -maxdepth 1 -type f -exec cp -t {results} {{}} +",
            worker="0"))
    out = shlex.quote(f"{args.out}/{args.run}")
    run(f"mkdir -p {out}")
    run(f"gcloud storage rsync --recursive {shlex.quote(f'gs://{args.ckpt_bucket}/{args.run}')} {out}")


def delete(args: argparse.Namespace, run: common.Runner) -> None:
    run(gcloud(args, "delete", args.name, "--quiet"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=STEPS)
    parser.add_argument("--name", type=word, help="TPU VM name.")
    parser.add_argument("--zone", help="Zone, e.g. us-central2-b (v4).")
    parser.add_argument("--project", default="", help="Google Cloud project ('' = gcloud's default).")
    parser.add_argument("--accelerator_type", default="v4-32", help="Slice, e.g. v4-32 (4 hosts, 16 chips).")
    parser.add_argument("--version", default="tpu-ubuntu2204-base", help="TPU software version (v4: this one).")
    parser.add_argument("--spot", action="store_true", help="Spot capacity (preemptible; resume with `all`).")
    parser.add_argument("--data_uri", help="gs:// folder with vg/, features.tsv and checkpoint/.")
    parser.add_argument("--ckpt_bucket", type=word, help="Checkpoint bucket name (hierarchical namespace).")
    parser.add_argument("--run", type=word, default="vg_tpu", help="Run name: workdir runs/RUN, bucket folder RUN/.")
    parser.add_argument("--config", default="configs/vg_tpu.py", help="Config file, relative to the repository.")
    parser.add_argument("--out", default="runs/tpu", help="Where collect puts RUN/ here.")
    args = common.parse(parser)
    common.require(parser, args, ("name", "zone", *NEEDS.get(args.step, ())))

    run = common.Runner(args.dry_run)
    steps = {"create": create, "setup": setup, "run": start, "collect": collect, "delete": delete}
    for step in ("create", "setup", "run") if args.step == "all" else (args.step,):
        steps[step](args, run)


if __name__ == "__main__":
    main()
