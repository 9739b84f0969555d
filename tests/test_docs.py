"""The commands the README and docs/ show exist: every ``fairseq-magic``
subcommand and option they name, and every option of a ``fairseq-train`` /
``fairseq-validate`` line in their code blocks (parsed with the task, model and
criterion the line names, the plugin loaded)."""

import re
import shlex

import pytest
from fairseq import options

from conftest import PLUGIN, ROOT
from fairseq_magic import cli
from fairseq_magic.ranges import parser_options

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```(?:bash|sh|shell)\n(.*?)```", re.S)  # output blocks carry no language


def commands(page):
    """Each command line of the page's code blocks (continuations joined, comments dropped)."""
    for block in BLOCK.findall(page.read_text()):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith(("fairseq-magic ", "fairseq-train ", "fairseq-validate ")):
                yield line


def words(line):
    line = re.sub(r"\$\{?\w+\}?", "X", line.replace("...", ""))
    try:
        return shlex.split(line)
    except ValueError:  # a quote the line leaves open (a shell snippet's)
        return line.split()


CASES = [pytest.param(page, line, id=f"{page.name}: {line[:60]}") for page in PAGES for line in commands(page)]


def test_the_pages_show_commands():
    assert len(CASES) > 15
    assert {p.name for p in PAGES} >= {"README.md", "training.md", "search-export-finetune.md", "measuring.md"}


def magic_options(argv):
    """The subcommand words ``argv`` opens with, and the options that subcommand knows."""
    known = {}
    for words, _, action in parser_options(cli.build_parser()):
        known.setdefault(words, set()).update(action.option_strings)
    command = max((w for w in known if tuple(argv[:len(w)]) == w), key=len)
    return command, known[command]


def fairseq_options(argv, validate: bool):
    """The options fairseq's parser knows for the task, model and criterion the line names."""
    chosen = []
    for flag in ("--task", "--arch", "--criterion", "--optimizer", "--lr-scheduler"):
        if flag in argv:
            chosen += [flag, argv[argv.index(flag) + 1]]
    if validate and "--task" not in chosen:  # the checkpoint gives it (fairseq_patches.validate_defaults)
        chosen += ["--task", "masked_lm"]
    if "--arch" not in chosen and not validate:  # a line that leaves the model out ("..."): the plugin's
        chosen += ["--arch", "magic_supernet_tiny" if "magic_masked_lm" in chosen else "magic_child"]
    parser = options.get_validation_parser() if validate else options.get_training_parser()
    options.parse_args_and_arch(parser, ["data", "--user-dir", PLUGIN, *chosen], parse_known=True)
    known = {s for a in parser._actions for s in a.option_strings}
    return known


@pytest.mark.parametrize("page,line", CASES)
def test_a_command_the_docs_show_exists(page, line):
    argv = words(line)
    given = {w.split("=")[0] for w in argv if w.startswith("--") and " " not in w}
    if argv[0] == "fairseq-magic":
        command, known = magic_options(argv[1:])
        assert command, f"no such subcommand: {line}"
    else:
        known = fairseq_options(argv, validate=argv[0] == "fairseq-validate")
    assert given <= known, f"{page.name}: unknown options {sorted(given - known)} in: {line}"
