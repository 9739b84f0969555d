"""Fine-tune an exported child with fairseq's sentence_prediction recipe, and load
exported and fine-tuned models through the hub interface."""

import json
import re
import sys

import pytest
import torch
from fairseq.models.roberta import RobertaHubInterface

from conftest import PLUGIN, assert_one_error_line, fairseq_train, magic, run, train_log
from fairseq_magic.models.state_format import decode_json
from fairseq_magic.models.child import MagicChildModel

ARCH = "MHA2,FFN,CONV3,FFN,MHA2,FFN"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    raw = root / "raw"
    magic("topics", "--out", str(raw), "--per-label", "400")
    # pre-training data: the same kind of text, through the demo's own steps
    magic("corpus", "--out", str(root / "text"), "--corpus", str(raw / "train.input0"))
    magic("spm", "--data", str(root / "text"), "--out", str(root / "spm"), "--vocab-size", "600")
    spm_model = str(root / "spm" / "spm.model")
    preprocess = [sys.executable, "-m", "fairseq_cli.preprocess", "--only-source", "--workers", "1"]
    run(preprocess + ["--trainpref", str(root / "spm" / "train.spm"), "--validpref", str(root / "spm" / "valid.spm"),
                      "--destdir", str(root / "mlm")])
    fairseq_train(str(root / "mlm"), str(root / "supernet"), "--max-update", "40", "--lr", "2e-3")
    magic("export", "--checkpoint", str(root / "supernet" / "checkpoint_last.pt"), "--arch", ARCH,
          "--out", str(root / "child" / "model.pt"), "--sentencepiece-model", spm_model)
    magic("encode", "--spm", spm_model, str(raw / "train.input0"), str(raw / "dev.input0"))
    run(preprocess + ["--trainpref", str(raw / "train.input0.spm"), "--validpref", str(raw / "dev.input0.spm"),
                      "--destdir", str(root / "glue" / "input0"), "--srcdict", str(root / "mlm" / "dict.txt")])
    run(preprocess + ["--trainpref", str(raw / "train.label"), "--validpref", str(raw / "dev.label"),
                      "--destdir", str(root / "glue" / "label")])
    finetune = run([
        sys.executable, "-m", "fairseq_cli.train", str(root / "glue"), "--user-dir", PLUGIN,
        "--restore-file", str(root / "child" / "model.pt"), "--reset-optimizer", "--reset-dataloader",
        "--reset-meters", "--task", "sentence_prediction", "--criterion", "sentence_prediction",
        "--num-classes", "2", "--arch", "magic_child", "--child-arch", ARCH, "--encoder-embed-dim", "32",
        "--encoder-ffn-embed-dim", "64", "--max-positions", "32", "--shorten-method", "truncate",
        "--init-token", "0", "--separator-token", "2", "--batch-size", "16", "--required-batch-size-multiple", "1",
        "--optimizer", "adam", "--lr", "1e-3", "--max-epoch", "4", "--best-checkpoint-metric", "accuracy",
        "--maximize-best-checkpoint-metric", "--no-epoch-checkpoints", "--cpu", "--num-workers", "0",
        "--log-format", "simple", "--seed", "1", "--save-dir", str(root / "ft"),
    ])
    return {"root": root, "spm": spm_model, "log": finetune.stdout + finetune.stderr}


def test_finetuned_accuracy_is_above_chance(pipeline):
    accuracies = [float(a) for a in re.findall(r"\| valid on 'valid' subset .*?\| accuracy ([0-9.]+)", pipeline["log"])]
    assert len(accuracies) == 4
    assert max(accuracies) > 65.0  # two balanced classes: chance is 50%, 160 dev sentences


def test_hub_loads_the_exported_and_the_finetuned_model(pipeline):
    root = pipeline["root"]
    # the export is self-contained: dict.txt and the sentencepiece model beside model.pt
    assert sorted(p.name for p in (root / "child").iterdir()) == [
        "README.md", "dict.txt", "model.pt", "sentencepiece.bpe.model"]  # README.md: the model card
    exported = MagicChildModel.from_pretrained(str(root / "child"))
    assert isinstance(exported, RobertaHubInterface)
    text = "Return the sum of the array elements over a given axis."
    tokens = exported.encode(text)
    assert exported.extract_features(tokens).shape == (1, len(tokens), 32)
    explicit = MagicChildModel.from_pretrained(
        str(root / "child"), checkpoint_file="model.pt", data_name_or_path=str(root / "mlm"),
        bpe="sentencepiece", sentencepiece_model=pipeline["spm"], user_dir=PLUGIN,
    )
    assert torch.equal(explicit.encode(text), tokens) and exported.decode(tokens) == text

    tuned = MagicChildModel.from_pretrained(
        str(root / "ft"), checkpoint_file="checkpoint_best.pt", data_name_or_path=str(root / "glue"),
        bpe="sentencepiece", sentencepiece_model=pipeline["spm"], user_dir=PLUGIN,
    )
    tuned.eval()
    labels = tuned.task.label_dictionary

    def predict(text):  # fairseq's README idiom: class index -> label string
        return labels.string([tuned.predict("sentence_classification_head", tuned.encode(text)).argmax().item() + labels.nspecial])

    assert {predict("Compute the eigenvalues of a sparse matrix."), predict("Send the message to the SMTP server.")} <= {"numeric", "stdlib"}
    with torch.no_grad():
        logits = tuned.predict("sentence_classification_head", tuned.encode("Return a new array of zeros."))
    assert logits.shape == (1, 2)


def test_rank_ground_truth_from_fine_tuning(pipeline, tmp_path):
    root = pipeline["root"]
    (tmp_path / "list.txt").write_text(ARCH + "\nFFN,FFN,FFN,FFN,FFN,FFN\n")
    children = tmp_path / "children"
    magic("rank", "sample", "--checkpoint", str(root / "supernet" / "checkpoint_last.pt"), "--out", str(children),
          "--list", str(tmp_path / "list.txt"))
    magic("rank", "train", "--dir", str(children), "--data", str(root / "mlm"),
          "--train-args", "--max-update 3 --batch-size 8 --tokens-per-sample 32 --optimizer adam --lr 1e-3 --cpu --num-workers 0",
          "--finetune-data", str(root / "glue"),
          "--finetune-args", "--num-classes 2 --max-positions 32 --shorten-method truncate --init-token 0 "
                             "--separator-token 2 --batch-size 16 --required-batch-size-multiple 1 --optimizer adam "
                             "--lr 1e-3 --max-epoch 1 --cpu --num-workers 0")
    truth = json.loads((children / "truth.json").read_text())
    assert len(truth) == 2 and all(0 <= t["finetune_accuracy"] <= 100 and t["valid_loss"] > 0 for t in truth.values())


def test_child_arch_from_a_file_a_string_or_the_restored_checkpoint_is_one_model(pipeline, tmp_path):
    """The export is 32 wide: a string --child-arch without sizes, the architecture file and no
    --child-arch at all all build it (sizes taken from the restored checkpoint); sizes that
    contradict the checkpoint are one error line before anything is trained."""
    root = pipeline["root"]
    (tmp_path / "arch.json").write_text(json.dumps({"arch": ARCH, "space": MagicChildModel.from_pretrained(
        str(root / "child")).model.space.to_dict()}))
    common = [sys.executable, "-m", "fairseq_cli.train", str(root / "glue"), "--user-dir", PLUGIN,
              "--restore-file", str(root / "child" / "model.pt"), "--reset-optimizer", "--reset-dataloader",
              "--reset-meters", "--task", "sentence_prediction", "--criterion", "sentence_prediction",
              "--num-classes", "2", "--arch", "magic_child", "--max-positions", "32", "--shorten-method", "truncate",
              "--init-token", "0", "--separator-token", "2", "--batch-size", "16", "--optimizer", "adam",
              "--lr", "1e-3", "--max-update", "1", "--cpu", "--num-workers", "0", "--no-epoch-checkpoints"]
    shapes = {}
    for name, arch in (("none", []), ("string", ["--child-arch", ARCH]), ("file", ["--child-arch", str(tmp_path / "arch.json")])):
        run(common + arch + ["--save-dir", str(tmp_path / name)])
        state = torch.load(tmp_path / name / "checkpoint_last.pt", map_location="cpu", weights_only=True)
        spec = decode_json(state["model"]["child_spec"])
        assert (spec["child_arch"], spec["encoder_embed_dim"], spec["encoder_ffn_embed_dim"]) == (ARCH, 32, 64)
        shapes[name] = {k: tuple(v.shape) for k, v in state["model"].items()}
    assert shapes["none"] == shapes["string"] == shapes["file"]
    wide = run(common + ["--child-arch", ARCH, "--encoder-embed-dim", "768", "--save-dir", str(tmp_path / "wide")],
               check=False)
    assert_one_error_line(wide, "encoder_embed_dim 768 (checkpoint: 32)")
    other = run(common + ["--child-arch", "FFN,FFN", "--save-dir", str(tmp_path / "other")], check=False)
    assert_one_error_line(other, f"--child-arch FFN,FFN (checkpoint: {ARCH})")
    assert not list(tmp_path.glob("wide/*.pt")) and not list(tmp_path.glob("other/*.pt"))


def test_distilled_fine_tuning_from_the_fine_tuned_teacher(pipeline, tmp_path):
    """Stage 2 of the distillation: the fine-tuned model teaches a fresh copy of the export."""
    root = pipeline["root"]
    common = [sys.executable, "-m", "fairseq_cli.train", str(root / "glue"), "--user-dir", PLUGIN,
              "--restore-file", str(root / "child" / "model.pt"), "--reset-optimizer", "--reset-dataloader",
              "--reset-meters", "--task", "sentence_prediction", "--criterion", "sentence_prediction_kd",
              "--num-classes", "2", "--arch", "magic_child", "--max-positions", "32", "--shorten-method", "truncate",
              "--init-token", "0", "--separator-token", "2", "--batch-size", "16", "--optimizer", "adam",
              "--lr", "1e-3", "--max-update", "3", "--cpu", "--num-workers", "0", "--log-format", "json",
              "--log-interval", "1", "--no-progress-bar", "--save-dir", str(tmp_path / "student")]
    proc = run(common + ["--kd-teacher", str(root / "ft" / "checkpoint_best.pt"), "--kd-temperature", "2"])
    records = train_log(proc)
    assert len(records) == 3 and all(float(r["kd_loss"]) > 0 for r in records) and "accuracy" in records[-1]
    no_head = run(common + ["--kd-teacher", str(root / "child" / "model.pt")], check=False)
    assert_one_error_line(no_head, "has no classification head 'sentence_classification_head'")


def test_an_electra_trained_child_fine_tunes_and_loads_unchanged(pipeline, tmp_path):
    """The discriminator that magic_electra saves is a magic_child: sentence_prediction restores it
    (no --child-arch) and the hub loads it."""
    root = pipeline["root"]
    run([sys.executable, "-m", "fairseq_cli.train", str(root / "mlm"), "--user-dir", PLUGIN, "--task", "magic_electra",
         "--criterion", "magic_electra", "--arch", "magic_child", "--child-arch", ARCH, "--encoder-embed-dim", "32",
         "--encoder-ffn-embed-dim", "64", "--tokens-per-sample", "32", "--batch-size", "8", "--optimizer", "adam",
         "--lr", "1e-3", "--max-update", "4", "--cpu", "--num-workers", "0", "--save-dir", str(tmp_path / "electra")])
    ckpt = str(tmp_path / "electra" / "checkpoint_last.pt")
    proc = run([sys.executable, "-m", "fairseq_cli.train", str(root / "glue"), "--user-dir", PLUGIN,
                "--restore-file", ckpt, "--reset-optimizer", "--reset-dataloader", "--reset-meters",
                "--task", "sentence_prediction", "--criterion", "sentence_prediction", "--num-classes", "2",
                "--arch", "magic_child", "--max-positions", "32", "--shorten-method", "truncate", "--init-token", "0",
                "--separator-token", "2", "--batch-size", "16", "--optimizer", "adam", "--lr", "1e-3",
                "--max-update", "2", "--cpu", "--num-workers", "0", "--no-save"])
    assert "valid on 'valid' subset" in proc.stdout + proc.stderr
    hub = MagicChildModel.from_pretrained(str(tmp_path / "electra"), checkpoint_file="checkpoint_last.pt",
                                          data_name_or_path=str(root / "mlm"), bpe="sentencepiece",
                                          sentencepiece_model=pipeline["spm"])
    tokens = hub.encode("Return the sum of the array elements.")
    assert hub.extract_features(tokens).shape == (1, len(tokens), 32)
