"""Split a binarised training split into N shards, fairseq's way of making an
epoch shorter: ``fairseq-train OUT/shard0:OUT/shard1:...`` trains one shard per
epoch, round robin, and validates on the first shard's valid split.

Used by the anchor-top-p sweep (``run.sh anchor-top-p``): the top-p anchor
policy (Fig. 3b/c) acts at epoch ends, and one epoch of the CPU corpus is
~1,300 updates, so a 2,000-update super-net would see it once. The shards are consecutive slices of
the split (documents stay whole); every shard gets the dictionary, the first
one also the other splits (links).

    python examples/sweeps/shard.py data/default/bin OUT --shards 5

Prints the colon-joined data argument.
"""

import argparse
import os
import sys

from fairseq.data import Dictionary, data_utils, indexed_dataset


def shard(data: str, out: str, shards: int, split: str = "train") -> list:
    dictionary = Dictionary.load(os.path.join(data, "dict.txt"))
    dataset = data_utils.load_indexed_dataset(os.path.join(data, split), dictionary)
    if dataset is None:
        sys.exit(f"shard.py: error: no '{split}' split in {data}")
    if not 1 <= shards <= len(dataset):
        sys.exit(f"shard.py: error: --shards must be 1..{len(dataset)} (the split's sentences)")
    dirs = []
    for k in range(shards):
        target = os.path.join(out, f"shard{k}")
        os.makedirs(target, exist_ok=True)
        dirs.append(target)
        dictionary.save(os.path.join(target, "dict.txt"))
        builder = indexed_dataset.make_builder(os.path.join(target, f"{split}.bin"), "mmap", len(dictionary))
        for i in range(k * len(dataset) // shards, (k + 1) * len(dataset) // shards):
            builder.add_item(dataset[i])
        builder.finalize(os.path.join(target, f"{split}.idx"))
    for name in sorted(os.listdir(data)):  # the other splits, in the first shard
        link = os.path.join(dirs[0], name)
        if name.endswith((".bin", ".idx")) and not name.startswith(split + ".") and not os.path.exists(link):
            os.symlink(os.path.abspath(os.path.join(data, name)), link)
    return dirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="a fairseq-preprocess output directory")
    parser.add_argument("out", help="where shard0, shard1, ... are written")
    parser.add_argument("--shards", type=int, default=5)
    parser.add_argument("--split", default="train")
    args = parser.parse_args()
    print(":".join(shard(args.data, args.out, args.shards, args.split)))


if __name__ == "__main__":
    main()
