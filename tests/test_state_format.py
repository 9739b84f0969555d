"""Checkpoints written by an earlier version of the plugin still load, search,
export and resume: tests/fixtures/format0/ holds a MAGIC-AT super-net and an
exported child written before the state dict carried a format version
(tests/fixtures/make_format_checkpoints.py wrote them once)."""

import shutil
import sys

import torch

from conftest import COMMON, PLUGIN, ROOT, assert_one_error_line, magic, run, train_log
from fairseq_magic.models.state_format import FORMAT_VERSION, FORMAT_VERSION_KEY, SEARCH_STATE_KEY, decode_json

sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
from make_format_checkpoints import CHILD, MAGIC_AT, SPACE, UPDATES  # noqa: E402

FORMAT0 = ROOT / "tests" / "fixtures" / "format0"


def trained_state(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_a_format0_supernet_resumes_exactly_where_it_stopped(data_bin, tmp_path):
    old = trained_state(FORMAT0 / "supernet.pt")
    (tmp_path / "save").mkdir()
    shutil.copy(FORMAT0 / "supernet.pt", tmp_path / "save" / "checkpoint_last.pt")
    proc = run([sys.executable, "-m", "fairseq_cli.train", data_bin, *COMMON, *SPACE, *MAGIC_AT,
                "--max-update", str(UPDATES + 2),
                "--save-dir", str(tmp_path / "save"), "--no-epoch-checkpoints"])
    assert [r["num_updates"] for r in train_log(proc)] == [str(UPDATES + 1), str(UPDATES + 2)]
    new = trained_state(tmp_path / "save" / "checkpoint_last.pt")
    before, after = decode_json(old["model"][SEARCH_STATE_KEY]), decode_json(new["model"][SEARCH_STATE_KEY])
    assert after["anchor"]["arch"] == before["anchor"]["arch"]  # MAGIC-A's anchor came through
    assert sum(map(sum, after["visits"]["layer"])) == sum(map(sum, before["visits"]["layer"])) + 2 * 4
    assert int(new["model"][FORMAT_VERSION_KEY]) == FORMAT_VERSION  # and it is saved in today's format


def test_a_format0_supernet_exports_the_same_child(data_bin, tmp_path):
    state = trained_state(FORMAT0 / "supernet.pt")
    state["cfg"]["task"]["data"] = data_bin  # export takes the dictionary from the data the super-net names
    torch.save(state, tmp_path / "supernet.pt")
    magic("export", "--checkpoint", str(tmp_path / "supernet.pt"), "--arch", CHILD, "--out", str(tmp_path / "child.pt"))
    old, new = trained_state(FORMAT0 / "child.pt")["model"], trained_state(tmp_path / "child.pt")["model"]
    new.pop(FORMAT_VERSION_KEY)
    assert sorted(old) == sorted(new)
    assert all(torch.equal(old[k], new[k]) for k in old)


def test_a_format0_child_validates(data_bin):
    proc = run([sys.executable, "-m", "fairseq_cli.validate", data_bin, "--path", str(FORMAT0 / "child.pt"),
                "--task", "masked_lm", "--user-dir", PLUGIN, "--cpu", "--batch-size", "8", "--tokens-per-sample", "16"])
    assert "valid on 'valid' subset" in proc.stdout + proc.stderr


def test_a_checkpoint_from_a_newer_plugin_is_one_line(tmp_path):
    state = trained_state(FORMAT0 / "supernet.pt")
    state["model"][FORMAT_VERSION_KEY] = torch.tensor(FORMAT_VERSION + 1)
    torch.save(state, tmp_path / "newer.pt")
    proc = magic("export", "--checkpoint", str(tmp_path / "newer.pt"), "--arch", CHILD, "--out",
                 str(tmp_path / "child.pt"), check=False)
    assert_one_error_line(proc, f"was written by a newer fairseq-magic (state format {FORMAT_VERSION + 1}; "
                                f"this one reads formats up to {FORMAT_VERSION})")
    assert not (tmp_path / "child.pt").exists()
