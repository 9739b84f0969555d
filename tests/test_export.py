"""Export a child of a super-net, and use it as fairseq uses RoBERTa."""

import json
import sys

import pytest
import torch
from fairseq import checkpoint_utils

from conftest import COMMON, assert_one_error_line, load_state, magic, run, train_log
from fairseq_magic.models.child import MagicChildModel
from fairseq_magic.space import SearchSpace, save_child

ARCH = "MHA2,FFN,CONV3,CONV5,FFN,MHA2"
SPACE = SearchSpace.build(6, "MHA2,FFN,CONV3,CONV5", hidden_dim=32, ffn_dim=64, embed_dim=16)


def test_exported_child_computes_what_the_supernet_computes(supernet, tmp_path):
    arch_file = tmp_path / "child.json"
    save_child(str(arch_file), SPACE, SPACE.parse(ARCH))
    out = tmp_path / "child" / "model.pt"
    magic("export", "--checkpoint", supernet, "--arch", str(arch_file), "--out", str(out))

    [child], cfg, _ = checkpoint_utils.load_model_ensemble_and_task([str(out)])
    [net], _, _ = checkpoint_utils.load_model_ensemble_and_task([supernet])
    assert type(child).__name__ == "MagicChildModel" and cfg.model.child_arch == ARCH
    n_child = sum(p.numel() for p in child.parameters())
    assert n_child == SPACE.params(SPACE.parse(ARCH), vocab_size=len(child.encoder.dictionary), max_positions=32)
    assert n_child < sum(p.numel() for p in net.parameters())  # no unused operators
    net.set_child(ARCH)
    child.eval(), net.eval()
    tokens = torch.randint(4, len(child.encoder.dictionary), (3, 20))
    tokens[1, 15:] = 1  # padding
    with torch.no_grad():
        a, a_extra = child(tokens, return_all_hiddens=True)
        b, b_extra = net(tokens, return_all_hiddens=True)
    assert torch.equal(a, b)
    assert all(torch.equal(x, y) for x, y in zip(a_extra["inner_states"], b_extra["inner_states"]))


def test_retrain_from_scratch_and_continue_from_the_export(supernet, data_bin, tmp_path):
    arch_file = tmp_path / "child.json"
    save_child(str(arch_file), SPACE, SPACE.parse(ARCH))
    base = [sys.executable, "-m", "fairseq_cli.train", data_bin, *COMMON[:2], "--task", "masked_lm",
            "--criterion", "masked_lm", "--arch", "magic_child", "--child-arch", str(arch_file),
            "--tokens-per-sample", "32", "--batch-size", "8", "--optimizer", "adam", "--lr", "1e-3",
            "--cpu", "--num-workers", "0", "--log-format", "json", "--log-interval", "1", "--max-update", "5"]
    scratch = run(base + ["--save-dir", str(tmp_path / "scratch")])
    assert len(train_log(scratch)) == 5
    assert not any("candidates" in k for k in load_state(str(tmp_path / "scratch" / "checkpoint_last.pt"))["model"])

    out = tmp_path / "export.pt"
    magic("export", "--checkpoint", supernet, "--arch", ARCH, "--out", str(out))
    cont = run(base + ["--save-dir", str(tmp_path / "cont"), "--restore-file", str(out),
                       "--reset-optimizer", "--reset-dataloader", "--reset-meters"])
    assert "Loaded checkpoint" in cont.stdout + cont.stderr
    # inherited weights start far below the from-scratch loss
    assert float(train_log(cont)[0]["loss"]) < float(train_log(scratch)[0]["loss"])

    arch_file.unlink()  # a retrained checkpoint rebuilds without the architecture file
    [model], cfg, _ = checkpoint_utils.load_model_ensemble_and_task([str(tmp_path / "scratch" / "checkpoint_last.pt")])
    assert cfg.model.child_arch == ARCH and model.space.format(model.child) == ARCH


@pytest.mark.parametrize(
    "args,message",
    [
        (["--arch", "MHA2,FFN"], "architecture has 2 layers, the space has 6"),
        (["--arch", "MHA2,FFN,CONV3,CONV5,FFN,MHA8"], "not a candidate"),
    ],
)
def test_export_bad_child_fails_clearly(supernet, tmp_path, args, message):
    proc = magic("export", "--checkpoint", supernet, *args, "--out", str(tmp_path / "x.pt"), check=False)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("fairseq-magic: error:")
    assert message in proc.stderr and not (tmp_path / "x.pt").exists()


STOCK_ROBERTA = """
import sys, torch
from fairseq.models.roberta import RobertaModel
hub = RobertaModel.from_pretrained(sys.argv[1], "model.pt", bpe="sentencepiece")  # fairseq's own loader, no plugin
assert "fairseq_magic" not in sys.modules and type(hub.model) is RobertaModel
hub.eval()
tokens = hub.encode(sys.argv[2])
torch.save({"tokens": tokens, "features": hub.extract_features(tokens, return_all_hiddens=True)}, sys.argv[3])
"""


def test_a_plain_transformer_child_exports_as_a_stock_roberta_checkpoint(plain_supernet, spm_data, tmp_path):
    arch = "MHA4,FFN,MHA4,FFN,MHA4,FFN"
    for fmt in ("magic_child", "roberta"):
        magic("export", "--checkpoint", plain_supernet, "--arch", arch, "--out", str(tmp_path / fmt / "model.pt"),
              "--sentencepiece-model", spm_data["spm"], "--format", fmt)
    text = "tok3 tok17 tok5 tok42 tok8"
    run([sys.executable, "-c", STOCK_ROBERTA, str(tmp_path / "roberta"), text, str(tmp_path / "stock.pt")])
    stock = torch.load(tmp_path / "stock.pt", weights_only=True)
    ours = MagicChildModel.from_pretrained(str(tmp_path / "magic_child"))
    ours.eval()
    assert torch.equal(ours.encode(text), stock["tokens"])
    with torch.no_grad():
        inner = ours.extract_features(stock["tokens"], return_all_hiddens=True)
    # roberta's layer j is our MHA layer 2j and FFN layer 2j+1: every second hidden state, and the output
    assert len(stock["features"]) == 4 and len(inner) == 7
    for j, feature in enumerate(stock["features"]):
        torch.testing.assert_close(feature, inner[2 * j], rtol=1e-5, atol=1e-5)
    state = load_state(str(tmp_path / "roberta" / "model.pt"))
    assert state["cfg"]["model"]["_name"] == "roberta" and state["cfg"]["model"]["encoder_layers"] == 3
    assert sorted(p.name for p in (tmp_path / "roberta").iterdir()) == [
        "README.md", "dict.txt", "model.pt", "sentencepiece.bpe.model"]  # the model card, and what it needs


@pytest.mark.parametrize("arch, message", [
    ("MHA4,FFN,CONV3,FFN,MHA4,FFN", "layer 2 is CONV3, not MHA"),
    ("MHA4,FFN,MHA2,FFN,MHA4,FFN", "MHA sizes differ (MHA2, MHA4; roberta has one)"),
    ("MHA4,FFN32,MHA4,FFN,MHA4,FFN", "FFN sizes differ"),
    ("FFN,MHA4,MHA4,FFN,MHA4,FFN", "layer 0 is FFN, not MHA; layer 1 is MHA4, not FFN"),
])
def test_other_children_are_one_line_naming_what_prevents_roberta(plain_supernet, tmp_path, arch, message):
    proc = magic("export", "--checkpoint", plain_supernet, "--arch", arch, "--out", str(tmp_path / "x" / "model.pt"),
                 "--format", "roberta", check=False)
    assert_one_error_line(proc, f"{arch} is not a plain Transformer, so it cannot be a roberta checkpoint: ")
    assert message in proc.stderr and not (tmp_path / "x" / "model.pt").exists()


def test_factorised_embeddings_prevent_roberta(supernet, tmp_path):
    proc = magic("export", "--checkpoint", supernet, "--arch", "MHA2,FFN,MHA2,FFN,MHA2,FFN", "--out",
                 str(tmp_path / "model.pt"), "--format", "roberta", check=False)
    assert_one_error_line(proc, "factorised embeddings (16 -> 32)")


STOCK_LOAD = """
import json
import sys
from fairseq import checkpoint_utils
checkpoint_utils.load_model_ensemble_and_task([sys.argv[1]], arg_overrides={"data": sys.argv[2]})
"""


def test_without_the_plugin_fairseq_says_how_to_load_it(supernet, data_bin, tmp_path):
    """Stock fairseq (no --user-dir) on a super-net or an exported child: the error it ends
    with names the plugin and how to load it, not a bare KeyError of a config field."""
    magic("export", "--checkpoint", supernet, "--arch", ARCH, "--out", str(tmp_path / "child" / "model.pt"))
    for path in (supernet, str(tmp_path / "child" / "model.pt")):
        proc = run([sys.executable, "-c", STOCK_LOAD, path, data_bin], check=False)
        assert proc.returncode != 0
        assert "fairseq-magic plugin not loaded - add --user-dir fairseq_magic" in proc.stderr.strip().splitlines()[-1]
    # with the plugin the note is gone from the loaded config
    state = checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "child" / "model.pt"))
    assert list(state["cfg"]["model"])[0] != "fairseq-magic plugin not loaded" and "_name" in state["cfg"]["model"]
    assert not any(str(k).startswith("fairseq-magic plugin") for k in state["cfg"]["model"])


def test_one_size_everywhere_the_tied_matrix_counted_once(plain_supernet, tmp_path):
    """search lists, size prints, export logs and the model holds the same parameter count:
    the masked-LM head's output matrix is the token table, counted once."""
    search = magic("search", "--checkpoint", plain_supernet, "--out", str(tmp_path / "s"), "--population", "6",
                   "--generations", "2", "--sentences", "16")
    best = json.loads((tmp_path / "s" / "best.json").read_text())
    listed = int(next(line.split()[3] for line in search.stdout.splitlines() if line.strip().startswith("1 ")
                      ).replace(",", ""))
    size = magic("size", "--checkpoint", plain_supernet, "--arch", best["arch"]).stdout
    printed = int(size.splitlines()[-1].split()[-2].replace(",", ""))
    # what the card quotes from search.json is anyone's text: it must stay text
    record = json.loads((tmp_path / "s" / "search.json").read_text())
    record.update(scored="<script>alert(1)</script>", sentences="\n# Owned", seed="[x](javascript:alert(1))",
                  limits={"<b>max_params</b>": 1e9})
    (tmp_path / "s" / "search.json").write_text(json.dumps(record))
    out = tmp_path / "chi'ld" / "model.pt"
    exported = magic("export", "--checkpoint", plain_supernet, "--arch", str(tmp_path / "s" / "best.json"),
                     "--out", str(out)).stdout
    [model], _, _ = checkpoint_utils.load_model_ensemble_and_task([str(out)])
    held = sum(p.numel() for p in model.parameters())
    assert listed == best["params"] == printed == held, (listed, best["params"], printed, held)
    assert f"({held:,} parameters: embeddings " in exported and ", layers " in exported
    for part in ("embeddings", "layers", "masked-LM head"):
        assert part in size
    card = (tmp_path / "chi'ld" / "README.md").read_text()
    assert best["arch"] in card and f"{held:,}" in card and "search: evolution by loss" in card
    assert "<script>" not in card and "<b>" not in card and "](javascript" not in card
    assert "\\<script\\>alert\\(1\\)" in card and "\\# Owned" in card
    assert [line for line in card.splitlines() if line.startswith("#")] == [
        f"# {best['arch']}", "## Architecture", "## How it was found", "## Loading"]
    assert f"from_pretrained({str(out.parent)!r})" in card  # a quote in the folder's name stays inside the string
