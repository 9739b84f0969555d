"""The allowed range of every numeric option, declared once where the option is.

A fairseq option (a field of a task, model or criterion dataclass) declares it
in its metadata, in interval notation::

    align_lambda: float = field(default=0.0, metadata={"help": "...", "range": "[0, inf)"})

an option of a ``fairseq-magic`` subcommand through its type::

    p.add_argument("--population", type=ranged(int, "[1, inf)"), default=50)

``check_config`` enforces every declared range of a fairseq configuration (its
task, model and criterion) in one pass; the plugin runs it when a fairseq
command starts (``fairseq-train``, ``fairseq-validate``; see
``fairseq_patches.py``), before anything is built or written. ``fairseq-hydra-train`` imports the plugin only once it runs,
so each plugin task, model and criterion also runs ``check_section`` on its
own options when fairseq builds it (the task first, before any data is read).
A value outside its range is one line::

    fairseq-magic: error: --align-lambda must be >= 0, got -1.0

``ranged`` types fail the same way while the subcommand's arguments are parsed.
"""

import argparse
import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from .errors import MagicError

RANGE = "range"  # the metadata key of a dataclass field's range
_INTERVAL = re.compile(r"^([\[(])\s*(-inf|[-+0-9.e]+)\s*,\s*(inf|[-+0-9.e]+)\s*([\])])$")


@dataclass(frozen=True)
class Interval:
    """A range in interval notation: ``[0, 1]``, ``(0, inf)``, ``[1, 100]``."""

    low: float
    high: float
    low_closed: bool
    high_closed: bool

    @classmethod
    def parse(cls, text: str) -> "Interval":
        found = _INTERVAL.match(text.strip())
        if found is None:
            raise ValueError(f"not an interval: {text!r} (write e.g. '[0, 1]' or '(0, inf)')")
        opening, low, high, closing = found.groups()
        return cls(float(low), float(high), opening == "[", closing == "]")

    def __contains__(self, value) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def describe(self) -> str:
        """``>= 0``, ``> 0``, ``in (0, 1]``."""
        if self.high == math.inf:
            return f"{'>=' if self.low_closed else '>'} {_number(self.low)}"
        if self.low == -math.inf:
            return f"{'<=' if self.high_closed else '<'} {_number(self.high)}"
        return (f"in {'[' if self.low_closed else '('}{_number(self.low)}, "
                f"{_number(self.high)}{']' if self.high_closed else ')'}")

    def outside(self, integer: bool) -> List[float]:
        """Values just outside the range (what a careless user types): below, above, NaN."""
        step = 1 if integer else 0.5
        values = []
        if self.low != -math.inf:
            values.append(self.low - step if self.low_closed else self.low)
        if self.high != math.inf:
            values.append(self.high + step if self.high_closed else self.high)
        if not integer:
            values.append(math.nan)
        return [int(v) if integer and not math.isnan(v) else v for v in values]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def option_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def must_be(interval: Interval, value) -> str:
    """``must be >= 0, got -1.0`` (``finite and`` added for an infinity the range leaves out)."""
    finite = "finite and " if isinstance(value, float) and math.isinf(value) else ""
    return f"must be {finite}{interval.describe()}, got {value}"


def out_of_range(option: str, interval: Interval, value) -> MagicError:
    return MagicError(f"{option} {must_be(interval, value)}")


# ---------------------------------------------------------------- fairseq options (dataclass fields)
def declared_ranges(config_class) -> Dict[str, Interval]:
    """The ranges a dataclass declares, by field name (its bases' included)."""
    return {f.name: Interval.parse(f.metadata[RANGE]) for f in dataclasses.fields(config_class) if RANGE in f.metadata}


def section_dataclasses(cfg) -> Iterator[Tuple[str, object, type]]:
    """(section name, section config, its registered dataclass) of a fairseq config's
    task, model and criterion (those registered with a dataclass)."""
    from fairseq.criterions import CRITERION_DATACLASS_REGISTRY
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY, MODEL_DATACLASS_REGISTRY
    from fairseq.tasks import TASK_DATACLASS_REGISTRY

    registries = {
        "task": lambda name: TASK_DATACLASS_REGISTRY.get(name),
        "model": lambda name: MODEL_DATACLASS_REGISTRY.get(ARCH_MODEL_NAME_REGISTRY.get(name, name)),
        "criterion": lambda name: CRITERION_DATACLASS_REGISTRY.get(name),
    }
    for section, lookup in registries.items():
        section_cfg = _get(cfg, section)
        name = _get(section_cfg, "_name")
        config_class = lookup(name) if isinstance(name, str) else None
        if config_class is not None:
            yield section, section_cfg, config_class


def check_config(cfg) -> None:
    """Every declared range of ``cfg``'s task, model and criterion options holds (one
    MagicError naming the first option that is out of its range)."""
    for _, section_cfg, config_class in section_dataclasses(cfg):
        check_section(section_cfg, config_class)


def check_section(section_cfg, config_class) -> None:
    """The ranges ``config_class`` declares hold in ``section_cfg`` (a DictConfig or Namespace)."""
    for name, interval in declared_ranges(config_class).items():
        value = _get(section_cfg, name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value not in interval:
            raise out_of_range(option_name(name), interval, value)


def _get(cfg, key: str):
    """``cfg[key]`` of a DictConfig, dict or Namespace; None when absent (or unresolvable)."""
    if cfg is None:
        return None
    try:
        return cfg.get(key) if hasattr(cfg, "get") else getattr(cfg, key, None)
    except Exception:  # an interpolation that cannot resolve here: not an option of ours
        return None


# ---------------------------------------------------------------- fairseq-magic options (argparse types)
def ranged(kind: Callable, interval: str) -> Callable:
    """An argparse type: ``kind`` (int or float) within ``interval``."""
    bounds = Interval.parse(interval)

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got '{text}'")
        if value not in bounds:
            raise argparse.ArgumentTypeError(must_be(bounds, value))
        return value

    convert.interval = bounds
    convert.kind = kind
    convert.__name__ = kind.__name__  # argparse names the type in its messages
    return convert


def parser_options(parser: argparse.ArgumentParser, words: Tuple[str, ...] = ()) \
        -> Iterator[Tuple[Tuple[str, ...], argparse.ArgumentParser, argparse.Action]]:
    """(subcommand words, its parser, action) of every option of ``parser`` and its subcommands."""
    for action in parser._actions:  # argparse keeps no public list of a parser's options
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parser_options(sub, words + (name,))
        else:
            yield words, parser, action


def numeric_type(action: argparse.Action) -> Optional[Callable]:
    """int or float when ``action`` takes a number (ranged or not), else None."""
    kind = getattr(action.type, "kind", action.type)
    return kind if kind in (int, float) else None
