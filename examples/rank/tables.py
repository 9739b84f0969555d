"""Every rank-correlation figure in the docs, recomputed from the committed raw results.

Each study is a folder of examples/rank/results/ holding

    truth.json   the ground truth, as `fairseq-magic rank train` wrote it (every child, every seed)
    rank.json    each super-net's estimates of the children, as `fairseq-magic rank correlate` wrote them
                 (its taus and summaries are ignored here: they are recomputed)
    study.json   how to present it: the title, each method's row label, pairs of methods to test

and this script recomputes, with the same functions `rank correlate` uses, each table from the
estimates and the ground truth alone. A page quotes a table between two markers,

    <!-- rank-table STUDY/TABLE -->
    ...
    <!-- /rank-table -->

with TABLE one of: methods (tau per seed, mean, sd, tests against the first method, first child's true
rank, top-5 overlap, regret), pairs (the study's paired comparisons), training (training shares),
ceiling (the ground truth's own noise), rerank (the first pick before and after `search --rerank`, from
the study's rerank.json).

    python examples/rank/tables.py                 # print every table of every study
    python examples/rank/tables.py --write FILE..  # refresh the quoted tables in these pages
    python examples/rank/tables.py --check FILE..  # exit 1 if a quoted table differs from its recomputation
"""

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
from scipy import stats

from fairseq_magic.analysis.ground_truth import read_truth
from fairseq_magic.analysis.rank_correlation import GROUND_TRUTHS, compare_methods, seed_agreement

RESULTS = Path(__file__).resolve().parent / "results"
MARKER = re.compile(r"<!-- rank-table (\S+)/(\S+) -->\n.*?<!-- /rank-table -->", re.S)


class Study:
    """One study's raw results, recomputed."""

    def __init__(self, folder: Path):
        self.name = folder.name
        self.meta = json.loads((folder / "study.json").read_text())
        self.truth = read_truth(str(folder))
        rank = json.loads((folder / "rank.json").read_text())
        self.children: List[str] = rank["children"]
        metric = self.meta.get("ground_truth", "valid_loss")
        missing = [n for n in self.children if metric not in self.truth.get(n, {})]
        if missing:
            raise SystemExit(f"{folder}: truth.json has no {metric} for {', '.join(missing)}")
        self.metric = metric
        self.gt = [GROUND_TRUTHS[metric] * self.truth[n][metric] for n in self.children]  # higher is better
        self.estimates: Dict[str, List[List[float]]] = {}
        self.rows: Dict[str, List[dict]] = {}
        for row in rank["supernets"]:
            self.estimates.setdefault(row["label"], []).append(row["estimates"])
            self.rows.setdefault(row["label"], []).append(row)
        self.methods = compare_methods(self.estimates, self.gt)
        rerank = folder / "rerank.json"
        self.rerank = json.loads(rerank.read_text()) if rerank.is_file() else None

    def label(self, method: str) -> str:
        return self.meta["methods"].get(method, method)

    def taus(self, method: str) -> List[float]:
        return self.methods[method]["taus"]  # compare_methods' Kendall tau of each super-net

    # ------------------------------------------------------------ tables
    def methods_table(self) -> str:
        base = next(iter(self.methods))
        lines = [f"| method | tau, seeds {seed_range(len(self.estimates[base]))} | mean | sd | vs {self.label(base)} "
                 "| Welch p | paired p | first (sd) | top5 (sd) | regret, bits (sd) |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        for method, m in self.methods.items():
            taus = " / ".join(f"{t:.3f}" for t in m["taus"])
            versus = (f"{m['diff']:+.3f} | {m['welch_p']:.2g} | {m['paired_p']:.2g}" if "diff" in m
                      else " | | ")
            lines.append(f"| {self.label(method)} | {taus} | {m['mean']:.3f} | {m['sd']:.3f} | {versus} "
                         f"| {m['best_true_rank']:.1f} ({m['best_true_rank_sd']:.1f}) "
                         f"| {m['top_overlap']:.1f} ({m['top_overlap_sd']:.1f}) "
                         f"| {m['regret']:.3f} ({m['regret_sd']:.3f}) |")
        lines.append(f"\n{len(self.children)} children; first: the true rank of the child the super-net ranks first; "
                     "top5: how many of its top 5 are in the true top 5; regret: its first child's stand-alone loss "
                     "minus the truly best one's; mean (sd) over the seeds.")
        return "\n".join(lines)

    def pairs_table(self) -> str:
        lines = ["| comparison | difference of mean tau | per seed | paired t-test p | Wilcoxon p |",
                 "|---|---|---|---|---|"]
        for a, b in self.meta.get("pairs", []):
            ta, tb = np.array(self.taus(a)), np.array(self.taus(b))
            diff = ta - tb
            paired = stats.ttest_rel(ta, tb).pvalue
            wilcoxon = stats.wilcoxon(ta, tb).pvalue if np.any(diff != 0) else 1.0
            per_seed = " / ".join(f"{d:+.3f}" for d in diff)
            lines.append(f"| {self.label(a)} - {self.label(b)} | {diff.mean():+.3f} | {per_seed} | {paired:.2g} "
                         f"| {wilcoxon:.2g} |")
        return "\n".join(lines)

    def training_table(self) -> str:
        lines = ["| method | share_sd | adjacent_share_sd |", "|---|---|---|"]
        for method, rows in self.rows.items():
            if all("share_sd" in r for r in rows):
                lines.append(f"| {self.label(method)} | {np.mean([r['share_sd'] for r in rows]):.3f} "
                             f"| {np.mean([r['adjacent_share_sd'] for r in rows]):.3f} |")
        return "\n".join(lines)

    def true_rank(self, name: str) -> int:
        value = self.gt[self.children.index(name)]
        return 1 + sum(g > value for g in self.gt)

    def regret(self, name: str) -> float:
        return max(self.gt) - self.gt[self.children.index(name)]

    def rerank_table(self) -> str:
        if self.rerank is None:
            raise SystemExit(f"study {self.name} has no rerank.json (examples/rank/rerank_study.py writes it)")
        k, updates = self.rerank["k"], self.rerank["updates"]
        lines = [f"| method | super-nets | first child's true rank: search / re-ranked (top {k}, {updates} updates) "
                 "| in the true top 3: search / re-ranked | regret, bits: search / re-ranked | best of the top "
                 f"{k}: true rank |", "|---|---|---|---|---|---|"]
        by_method: Dict[str, List[dict]] = {}
        for row in self.rerank["supernets"]:
            by_method.setdefault(row["label"], []).append(row)
        for method, rows in by_method.items():
            first = [r["top"][0] for r in rows]
            picked = [r["top"][int(np.argmin(r["trained_loss"]))] for r in rows]
            reachable = [min(self.true_rank(n) for n in r["top"]) for r in rows]

            def ranks(names):
                return " ".join(str(self.true_rank(n)) for n in names)
            lines.append(
                f"| {self.label(method)} | {len(rows)} | {ranks(first)} / {ranks(picked)} "
                f"| {sum(self.true_rank(n) <= 3 for n in first)} / {sum(self.true_rank(n) <= 3 for n in picked)} "
                f"| {np.mean([self.regret(n) for n in first]):.3f} / {np.mean([self.regret(n) for n in picked]):.3f} "
                f"| {' '.join(map(str, reachable))} |")
        return "\n".join(lines)

    def ceiling_table(self) -> str:
        c = seed_agreement(self.truth, self.children, self.metric)
        if c is None:
            return "ceiling: unknown (one seed per child)"
        return (f"Ceiling: the same {c['children']} children trained with {c['seeds']} seeds agree with Kendall's "
                f"tau **{c['tau']:.3f}** (mean |difference| {c['mean_abs_diff']:.3f} bits after a common offset of "
                f"{c['seed_offset']:.3f}; span of the means {c['span']:.3f} bits).")

    def table(self, name: str) -> str:
        tables = {"methods": self.methods_table, "pairs": self.pairs_table, "training": self.training_table,
                  "ceiling": self.ceiling_table, "rerank": self.rerank_table}
        if name not in tables:
            raise SystemExit(f"unknown table '{name}' of study {self.name} (known: {', '.join(tables)})")
        return tables[name]()


def seed_range(n: int) -> str:
    return "1" if n == 1 else f"1-{n}"


def studies() -> Dict[str, Study]:
    return {folder.name: Study(folder) for folder in sorted(RESULTS.iterdir()) if (folder / "study.json").is_file()}


def refreshed(text: str, found: Dict[str, Study]) -> str:
    def block(match: re.Match) -> str:
        study, table = match.group(1), match.group(2)
        if study not in found:
            raise SystemExit(f"no study '{study}' in {RESULTS}")
        return f"<!-- rank-table {study}/{table} -->\n{found[study].table(table)}\n<!-- /rank-table -->"
    return MARKER.sub(block, text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", nargs="+", metavar="FILE", help="refresh the quoted tables in these pages")
    mode.add_argument("--check", nargs="+", metavar="FILE", help="exit 1 if a quoted table differs")
    args = parser.parse_args(argv)
    found = studies()
    if not (args.write or args.check):
        for study in found.values():
            print(f"## {study.name}: {study.meta['title']}\n")
            for table in ("ceiling", "methods", "pairs", "training") + (("rerank",) if study.rerank else ()):
                print(study.table(table) + "\n")
        return 0
    stale = []
    for page in map(Path, args.write or args.check):
        text = page.read_text()
        new = refreshed(text, found)
        if new != text:
            stale.append(str(page))
            if args.write:
                page.write_text(new)
    if args.check and stale:
        print(f"tables differ from their recomputation in: {', '.join(stale)} "
              "(python examples/rank/tables.py --write FILE refreshes them)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
