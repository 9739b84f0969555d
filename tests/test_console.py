"""A quiet console: no warning or library noise on stderr from the plugin's commands."""

import json
import sys

from conftest import PLAIN_CHILD, fairseq_train, magic, run
from fairseq_magic.cli import build_parser


def subcommands(parser=None, prefix=()):
    """Every subcommand path of ``fairseq-magic`` (rank's included)."""
    parser = parser or build_parser()
    for action in parser._actions:
        if getattr(action, "choices", None) and hasattr(action, "_name_parser_map"):
            for name, sub in action.choices.items():
                found = list(subcommands(sub, (*prefix, name)))
                yield from found or [(*prefix, name)]


HELPS = """
import contextlib, io, json, sys
from fairseq_magic import cli
for path in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.main([*path, "--help"])
        except SystemExit:
            pass
    assert out.getvalue().startswith("usage: fairseq-magic"), path
    sys.stderr.write(err.getvalue())
"""


def test_every_help_is_quiet():
    """Every subcommand's --help, in one process (the import's own output counted once)."""
    paths = list(subcommands())
    assert ("rank", "train") in paths and ("search",) in paths and ("size",) in paths
    proc = run([sys.executable, "-c", HELPS, json.dumps([[]] + [list(p) for p in paths])])
    assert proc.stderr == "", proc.stderr


def test_a_search_and_an_export_print_nothing_on_stderr(plain_supernet, tmp_path):
    """No tensorboardX notice, no progress bar redrawn into a file, no 'validation child' lines
    of a training run, no deprecation warnings."""
    search = magic("search", "--checkpoint", plain_supernet, "--out", str(tmp_path / "s"), "--population", "4",
                   "--generations", "2", "--sentences", "16")
    export = magic("export", "--checkpoint", plain_supernet, "--arch", PLAIN_CHILD, "--out", str(tmp_path / "c" / "m.pt"))
    size = magic("size", "--checkpoint", str(tmp_path / "c" / "m.pt"))
    for proc in (search, export, size):
        assert proc.stderr == "", proc.stderr
    assert "validation child" not in search.stdout and "children scored" in search.stdout


def test_fairseq_train_and_the_hub_print_no_warnings(data_bin, tmp_path):
    proc = fairseq_train(data_bin, str(tmp_path), "--max-update", "2")
    assert proc.stderr == "", proc.stderr
    assert "validation child 0" in proc.stdout  # a training run names the children its valid loss averages
    load = ("from fairseq_magic.models.supernet import MagicSupernetModel as M; import sys; "
            "M.from_pretrained(sys.argv[1], data_name_or_path=sys.argv[2])")
    proc = run([sys.executable, "-c", load, str(tmp_path), data_bin])
    assert "Archive name" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr
    assert "'common': {" not in proc.stderr  # fairseq's loader logs the whole config
