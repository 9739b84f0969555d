"""Search a trained super-net: evolution or random search under size limits.

Children are scored with the shared weights on a fixed validation slice (see
``search/scoring.py``): the batches are collated and moved to the device once, a child
is chosen by flipping each layer's active index (no rebuilding, no weight
copies), and every child is scored at most once. Limits on parameters (the
whole model, embeddings included) and forward FLOPs (per sequence of
``seq_len`` tokens) are checked before a child is scored; limits no child can
meet are an error.

Evolution follows SPOS (Guo et al. 2020): keep the ``parents`` best of each
generation, make half of the next by mutation (each layer re-drawn with
probability ``mutation_prob``) and half by uniform crossover of two parents,
all seeded.

A search can stay inside a sub-space of the super-net's: ``sub_space`` reads
``--candidate-ops`` as training does (``MHA4,FFN``, or layer groups
``MHA4|FFN``) into each layer's allowed operators, and ``plain_transformers``
lists the children that ``export --format roberta`` and ``--format huggingface``
take (MHA and FFN alternating, one head count, one FFN size): few enough to
score them all.
"""

import json
import logging
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np

from ..errors import MagicError
from ..space import Child, SearchSpace, parse_operator, save_child, write_whole
from ..training.samplers import Allowed, uniform_child
from .scoring import ChildScore

logger = logging.getLogger(__name__)


@dataclass
class Limits:
    min_params: float = 0
    max_params: float = float("inf")
    min_flops: float = 0
    max_flops: float = float("inf")
    seq_len: int = 128


class Constraints:
    """Parameter and FLOP limits of one search, with the sizes they are checked on."""

    def __init__(self, space: SearchSpace, limits: Limits, vocab_size: int, max_positions: int,
                 allowed: Allowed = None):
        self.space, self.limits = space, limits
        self.options = [list(o) for o in (allowed or space.layer_options)]  # each layer's operators to search
        self.shared = space.shared_params(vocab_size, max_positions)
        self.shared_flops = space.head_flops(vocab_size, limits.seq_len)  # every child has the masked-LM head
        self._check_feasible()

    def params(self, child: Child) -> int:
        return self.shared + self.space.layer_params(child)

    def flops(self, child: Child) -> int:
        return self.shared_flops + self.space.flops(child, self.limits.seq_len)

    def ok(self, child: Child) -> bool:
        lim = self.limits
        return (all(c in options for c, options in zip(child, self.options))
                and lim.min_params <= self.params(child) <= lim.max_params
                and lim.min_flops <= self.flops(child) <= lim.max_flops)

    def _check_feasible(self) -> None:
        space, lim = self.space, self.limits
        params = [[space.operator_params(space.candidates[c]) for c in options] for options in self.options]
        flops = [[space.operator_flops(space.candidates[c], lim.seq_len) for c in options] for options in self.options]
        lo_p, hi_p = (self.shared + sum(pick(p) for p in params) for pick in (min, max))
        lo_f, hi_f = (self.shared_flops + sum(pick(f) for f in flops) for pick in (min, max))
        if lim.max_params < lo_p or lim.min_params > hi_p or lim.min_params > lim.max_params:
            raise MagicError(
                f"no child can meet the parameter limits [{lim.min_params:,.0f}, {lim.max_params:,.0f}]: "
                f"children have {lo_p:,} to {hi_p:,} parameters"
            )
        if lim.max_flops < lo_f or lim.min_flops > hi_f or lim.min_flops > lim.max_flops:
            raise MagicError(
                f"no child can meet the FLOPs limits [{lim.min_flops:.3g}, {lim.max_flops:.3g}]: "
                f"children have {lo_f:.3g} to {hi_f:.3g} FLOPs at {lim.seq_len} tokens"
            )

    def sample(self, rng: np.random.Generator, tries: int = 1000) -> Child:
        """A random child within the limits: a uniform draw, repaired when it misses them."""
        for _ in range(tries):
            child = self.repair(uniform_child(self.space, rng, self.options), rng)
            if child is not None:
                return child
        raise MagicError(f"no child within the limits found in {tries} random draws; widen the limits")

    def repair(self, child: Child, rng: np.random.Generator, steps: int = 200) -> Optional[Child]:
        """Move towards the limits one layer at a time: while a child is too big (or
        small), give a random layer a random smaller (or bigger) operator."""
        space, lim = self.space, self.limits
        sizes = {
            "params": [space.operator_params(op) for op in space.candidates],
            "flops": [space.operator_flops(op, lim.seq_len) for op in space.candidates],
        }
        child = list(child)
        for _ in range(steps):
            if self.ok(tuple(child)):
                return tuple(child)
            params, flops = self.params(tuple(child)), self.flops(tuple(child))
            if params > lim.max_params or flops > lim.max_flops:
                key, shrink = ("params" if params > lim.max_params else "flops"), True
            else:
                key, shrink = ("params" if params < lim.min_params else "flops"), False
            size = sizes[key]
            moves = [(layer, c) for layer, cur in enumerate(child) for c in self.options[layer]
                     if (size[c] < size[cur] if shrink else size[c] > size[cur])]
            if not moves:
                return None
            layer, c = moves[int(rng.integers(len(moves)))]
            child[layer] = c
        return None


def mutate(child: Child, space: SearchSpace, prob: float, rng: np.random.Generator, allowed: Allowed = None) -> Child:
    redraw = rng.random(len(child)) < prob
    if space.groups or allowed is not None:
        fresh = [options[rng.integers(len(options))] for options in (allowed or space.layer_options)]
    else:
        fresh = rng.integers(0, space.num_candidates, size=len(child))
    return tuple(int(f) if r else c for c, f, r in zip(child, fresh, redraw))


def sub_space(space: SearchSpace, candidate_ops: str) -> List[List[int]]:
    """Each layer's allowed candidates under ``candidate_ops`` (training's syntax: ``MHA4,FFN``,
    or groups ``MHA4|FFN`` taken by the layers in turn); one line for an operator the space lacks."""
    groups = [[name.strip() for name in group.split(",") if name.strip()] for group in candidate_ops.split("|")]
    if not all(groups):
        raise MagicError(f"--candidate-ops '{candidate_ops}' has an empty group")
    by_key = {(op.kind, op.size): i for i, op in enumerate(space.candidates)}
    index = {}
    for name in (n for group in groups for n in group):
        op = parse_operator(name, space.ffn_dim)  # a malformed name is its own one line
        if (op.kind, op.size) not in by_key:
            raise MagicError(f"--candidate-ops: {name} is not a candidate of the super-net "
                             f"(its candidates: {', '.join(space.candidate_names)})")
        index[name] = by_key[op.kind, op.size]
    allowed = []
    for layer, options in enumerate(space.layer_options):
        chosen = [index[name] for name in groups[layer % len(groups)] if index[name] in options]
        if not chosen:
            raise MagicError(f"--candidate-ops '{candidate_ops}' leaves layer {layer} no operator (its candidates: "
                             + ", ".join(space.candidates[c].name for c in options) + ")")
        allowed.append(sorted(set(chosen)))
    return allowed


def plain_transformers(space: SearchSpace, allowed: Allowed = None) -> List[Child]:
    """The children of (``allowed``) ``space`` that are plain Transformers: MHA layers at even
    positions, FFN at odd, one MHA and one FFN throughout, attention as wide as the hidden size;
    one line saying why when there are none."""
    options = [list(o) for o in (allowed or space.layer_options)]
    if space.num_layers % 2 or space.embed_dim != space.hidden_dim:
        why = (f"{space.num_layers} layers (a Transformer layer is an MHA,FFN pair)" if space.num_layers % 2 else
               f"factorised embeddings ({space.embed_dim} -> {space.hidden_dim})")
        raise MagicError(f"this super-net has no plain-Transformer child: {why}")

    def common(kind: str, start: int) -> List[int]:
        sets = [{c for c in options[layer] if space.candidates[c].kind == kind} for layer in range(start, len(options), 2)]
        return sorted(c for c in set.intersection(*sets)
                      if kind != "MHA" or space.attention_width(space.candidates[c]) == space.hidden_dim)

    attention, ffn = common("MHA", 0), common("FFN", 1)
    if not attention or not ffn:
        raise MagicError("no plain-Transformer child in this (sub-)space: it needs an MHA as wide as the hidden size "
                         "allowed in every even layer and an FFN in every odd one")
    return [tuple([m, f] * (space.num_layers // 2)) for m in attention for f in ffn]


def crossover(a: Child, b: Child, rng: np.random.Generator) -> Child:
    take_a = rng.random(len(a)) < 0.5
    return tuple(x if t else y for x, y, t in zip(a, b, take_a))


def _offspring(make: Callable[[], Child], constraints: Constraints, seen: set, count: int, tries: int = 100) -> List[Child]:
    out: List[Child] = []
    for _ in range(count * tries):
        if len(out) == count:
            break
        child = make()
        if constraints.ok(child) and child not in seen:
            seen.add(child)
            out.append(child)
    return out


def evolution(
    score: Callable[[List[Child]], List[float]],
    constraints: Constraints,
    rng: np.random.Generator,
    population: int = 50,
    generations: int = 20,
    parents: int = 10,
    mutation_prob: float = 0.1,
    on_generation: Optional[Callable[[int, Dict[Child, float]], None]] = None,
) -> Dict[Child, float]:
    """Evolutionary search; returns every scored child with its score (higher is better)."""
    space = constraints.space
    seen: set = set()
    current = _offspring(lambda: constraints.sample(rng), constraints, seen, population)
    scores: Dict[Child, float] = dict(zip(current, score(current)))
    for gen in range(generations):
        if on_generation:
            on_generation(gen, scores)
        if gen == generations - 1:
            break
        top = sorted(scores, key=scores.get, reverse=True)[:parents]
        pick = lambda: top[int(rng.integers(len(top)))]  # noqa: E731
        mutants = _offspring(lambda: mutate(pick(), space, mutation_prob, rng, constraints.options), constraints, seen, population // 2)
        children = _offspring(lambda: crossover(pick(), pick(), rng), constraints, seen, population - len(mutants))
        new = mutants + children
        if not new:
            logger.info(f"generation {gen + 1}: no new child within the limits; stopping")
            break
        scores.update(zip(new, score(new)))
    return scores


def random_search(score, constraints: Constraints, rng: np.random.Generator, count: int) -> Dict[Child, float]:
    seen: set = set()
    children = _offspring(lambda: constraints.sample(rng), constraints, seen, count)
    return dict(zip(children, score(children)))


def write_results(results: Dict[Child, ChildScore], constraints: Constraints, metric: str, top: int,
                  settings: Dict, out: str, best: Optional[Child] = None) -> str:
    """Write ``search.json`` (the ``top`` children with scores, sizes and FLOPs, and
    ``settings``) and ``best.json`` (the architecture file of ``best``, by default the
    best-scored child) to ``out``; return the table of the top children."""
    space = constraints.space
    ranked = sorted(results, key=lambda c: results[c].value(metric), reverse=True)
    rows = [
        {"arch": space.format(c), "loss": results[c].loss, "accuracy": results[c].accuracy,
         "params": constraints.params(c), "flops": constraints.flops(c)}
        for c in ranked[:top]
    ]
    os.makedirs(out, exist_ok=True)
    record = {**settings, "scored": len(results), "space": space.to_dict(), "top": rows}
    write_whole(os.path.join(out, "search.json"), json.dumps(record, indent=2, default=float))
    best, best_file = best or ranked[0], os.path.join(out, "best.json")
    save_child(best_file, space, best, loss=results[best].loss, accuracy=results[best].accuracy,
               params=constraints.params(best), flops=constraints.flops(best))
    lines = [f"{'rank':>4}  {'loss':>7}  {'acc':>6}  {'params':>12}  {'GFLOPs':>8}  architecture"]
    for i, row in enumerate(rows, 1):
        lines.append(f"{i:>4}  {row['loss']:>7.4f}  {row['accuracy']:>6.4f}  {row['params']:>12,}  "
                     f"{row['flops'] / 1e9:>8.3f}  {row['arch']}")
    if "rerank" in settings:
        lines.append(f"re-ranked after {settings['rerank']['updates']} updates of training each (validation loss):")
        for i, r in enumerate(settings["rerank"]["children"], 1):
            lines.append(f"{i:>4}  {r['shared_loss']:>7.4f} -> {r['trained_loss']:.4f}  {r['arch']}")
    lines.append(f"{len(results)} children scored; best architecture{' (re-ranked)' if 'rerank' in settings else ''} "
                 f"written to {best_file}: {space.format(best)}")
    return "\n".join(lines)
