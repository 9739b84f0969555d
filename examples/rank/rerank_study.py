"""How much `search --rerank K` improves a search's first pick, on a rank study's ground truth.

For each super-net (from a rank study's rank.json: its estimates of the children), the top K children
by shared-weight estimate are trained briefly from their inherited weights with the function
`search --rerank` uses (fairseq_magic/search/rerank.py); the pick is the one with the lowest loss after
that. Writes rerank.json beside rank.json: per super-net, the top K (names), their shared-weight and
trained losses. examples/rank/tables.py turns it into the first child's true rank and regret before and
after re-ranking.

    python examples/rank/rerank_study.py --study examples/rank/results/fair-step-2000 \
        --dir checkpoints/fairstep/children --methods spos,fairnas --k 5 --updates 200
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

from fairseq_magic.analysis.rank_correlation import read_children
from fairseq_magic.search.rerank import rerank, training_options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", required=True, help="a folder of examples/rank/results/ (its rank.json)")
    parser.add_argument("--dir", required=True, help="the children's folder (children.json)")
    parser.add_argument("--methods", required=True, help="labels of rank.json whose super-nets to re-rank")
    parser.add_argument("--data", default="", help="data-bin (default: each super-net's)")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--args", default="", help="more fairseq-train options for the brief trainings")
    args = parser.parse_args()
    extra = training_options(args.args)  # checked before any training
    study = Path(args.study)
    rank = json.loads((study / "rank.json").read_text())
    _, children = read_children(args.dir)
    out_path = study / "rerank.json"
    out = json.loads(out_path.read_text()) if out_path.is_file() else {"k": args.k, "updates": args.updates,
                                                                       "supernets": []}
    done = {r["checkpoint"] for r in out["supernets"]}
    for row in rank["supernets"]:
        if row["label"] not in args.methods.split(",") or row["checkpoint"] in done:
            continue
        order = sorted(range(len(rank["children"])), key=lambda i: -row["estimates"][i])[:args.k]
        names = [rank["children"][i] for i in order]
        with tempfile.TemporaryDirectory() as tmp:
            results = rerank([row["checkpoint"]] * len(names), [children[n] for n in names],
                             [-row["estimates"][i] for i in order], args.data, tmp, args.updates,
                             extra, cpu=True, log=lambda line: None)
        out["supernets"].append({"label": row["label"], "checkpoint": row["checkpoint"], "top": names,
                                 "shared_loss": [r.shared_loss for r in results],
                                 "trained_loss": [r.trained_loss for r in results]})
        tmp_path = f"{out_path}.tmp"
        with open(tmp_path, "w") as f:
            json.dump(out, f, indent=1)
        os.replace(tmp_path, out_path)
        print(f"{row['label']} {row['checkpoint']}: {', '.join(f'{n} {r.trained_loss:.3f}' for n, r in zip(names, results))}")


if __name__ == "__main__":
    main()
