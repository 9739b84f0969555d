"""glue-prep: raw GLUE task folders, in each task's own layout, to the binarised
folders that fairseq's sentence_prediction fine-tuning reads."""

import itertools
import random
import sys

import pytest
import sentencepiece as spm
from fairseq.data import Dictionary, data_utils

from conftest import PLUGIN, ROOT, assert_one_error_line, fairseq_train, hydra_train, load_state, magic, run

# Each task's files as GLUE's download script writes them: (header or None, row builder).
# A row builder gets (index, sentence a, sentence b, label) and returns the fields.
CLASSES = {"CoLA": ["0", "1"], "SST-2": ["0", "1"], "MRPC": ["0", "1"], "QQP": ["0", "1"], "QNLI": ["entailment", "not_entailment"],
           "RTE": ["entailment", "not_entailment"], "WNLI": ["0", "1"], "MNLI": ["entailment", "neutral", "contradiction"]}
MNLI_HEAD = "index promptID pairID genre sentence1_binary_parse sentence2_binary_parse sentence1_parse sentence2_parse".split()
LAYOUTS = {
    "CoLA": {"train": (None, lambda i, a, b, y: ["gj04", y, "", a]),
             "test": (["index", "sentence"], lambda i, a, b, y: [i, a])},
    "SST-2": {"train": (["sentence", "label"], lambda i, a, b, y: [a, y]),
              "test": (["index", "sentence"], lambda i, a, b, y: [i, a])},
    "MRPC": {"train": (["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], lambda i, a, b, y: [y, "11", "12", a, b]),
             "test": (["index", "#1 ID", "#2 ID", "#1 String", "#2 String"], lambda i, a, b, y: [i, "11", "12", a, b])},
    "STS-B": {"train": ("index genre filename year old_index source1 source2 sentence1 sentence2 score".split(),
                        lambda i, a, b, y: [i, "main-news", "f", "2012", i, "none", "none", a, b, y]),
              "test": ("index genre filename year old_index source1 source2 sentence1 sentence2".split(),
                       lambda i, a, b, y: [i, "main-news", "f", "2012", i, "none", "none", a, b])},
    "QQP": {"train": (["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], lambda i, a, b, y: [i, "1", "2", a, b, y]),
            "test": (["id", "question1", "question2"], lambda i, a, b, y: [i, a, b])},
    "MNLI": {"train": (MNLI_HEAD + ["sentence1", "sentence2", "label1", "gold_label"],
                       lambda i, a, b, y: [i, "1", "2", "fiction", "(x)", "(y)", "(x)", "(y)", a, b, y, y]),
             "dev": (MNLI_HEAD + ["sentence1", "sentence2", "label1", "label2", "label3", "label4", "label5", "gold_label"],
                     lambda i, a, b, y: [i, "1", "2", "fiction", "(x)", "(y)", "(x)", "(y)", a, b, "neutral", y, y, y, y, y]),
             "test": (MNLI_HEAD + ["sentence1", "sentence2"], lambda i, a, b, y: [i, "1", "2", "fiction", "(x)", "(y)", "(x)", "(y)", a, b])},
    "QNLI": {"train": (["index", "question", "sentence", "label"], lambda i, a, b, y: [i, a, b, y]),
             "test": (["index", "question", "sentence"], lambda i, a, b, y: [i, a, b])},
}
LAYOUTS["RTE"] = {"train": (["index", "sentence1", "sentence2", "label"], LAYOUTS["QNLI"]["train"][1]),
                  "test": (["index", "sentence1", "sentence2"], LAYOUTS["QNLI"]["test"][1])}
LAYOUTS["WNLI"] = LAYOUTS["RTE"]
SPLITS = {"MNLI": {"train": "train", "dev_matched": "dev", "dev_mismatched": "dev", "test_matched": "test",
                   "test_mismatched": "test"}}
ROWS = {"train": 24, "dev": 8, "dev_matched": 8, "dev_mismatched": 6, "test": 5, "test_matched": 5, "test_mismatched": 4}


def write_glue(root, sentences):
    """Every task's folder with its train/dev/test files; what each should yield."""
    rng = random.Random(0)
    pool = itertools.cycle(sentences)
    expected = {}
    for task, layout in LAYOUTS.items():
        (root / task).mkdir(parents=True)
        expected[task] = {}
        for split, kind in SPLITS.get(task, {"train": "train", "dev": "dev", "test": "test"}).items():
            header, build = layout.get(kind, layout["train"])
            rows = []
            for i in range(ROWS[split]):
                a, b = next(pool), next(pool)
                y = f"{rng.uniform(0, 5):.3f}" if task == "STS-B" else rng.choice(CLASSES[task])
                rows.append((a, b, y, build(str(i), a, b, y)))
            lines = (["\t".join(header)] if header else []) + ["\t".join(fields) for *_, fields in rows]
            if task == "QQP" and kind == "train":
                lines.insert(3, "99\t1\t2\ta question cut short by a stray newline")  # fairseq drops these
            (root / task / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
            expected[task][split] = rows
    return expected


@pytest.fixture(scope="module")
def glue(spm_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("glue")
    sentences = [line.strip() for line in open(f"{spm_data['text']}/train.txt", encoding="utf-8") if line.strip()]
    expected = write_glue(root / "raw", [s[:200].replace("\t", " ").strip() for s in sentences])
    proc = magic("glue-prep", "--glue-dir", str(root / "raw"), "--out", str(root / "bin"),
                 "--spm", spm_data["spm"], "--dict", f"{spm_data['bin']}/dict.txt")
    return {"root": root, "expected": expected, "stdout": proc.stdout}


def load(path, dictionary):
    dataset = data_utils.load_indexed_dataset(str(path), dictionary)
    assert dataset is not None, f"missing {path}"
    return [dataset[i] for i in range(len(dataset))]


def test_every_task_is_split_encoded_and_binarised_as_fairseq_does(glue, spm_data):
    sp = spm.SentencePieceProcessor(model_file=spm_data["spm"])
    dictionary = Dictionary.load(f"{spm_data['bin']}/dict.txt")
    for task, splits in glue["expected"].items():
        out = glue["root"] / "bin" / f"{task}-bin"
        pair = task not in ("CoLA", "SST-2")
        assert (out / "input1").is_dir() == pair, task
        assert Dictionary.load(str(out / "input0" / "dict.txt")).symbols == dictionary.symbols  # the pre-training dict
        names = {"train": "train", "dev": "valid", "dev_matched": "valid", "dev_mismatched": "valid1",
                 "test": "test", "test_matched": "test", "test_mismatched": "test1"}
        for split, rows in splits.items():
            name = names[split]
            for column in (0, 1) if pair else (0,):
                encoded = load(out / f"input{column}" / name, dictionary)
                assert len(encoded) == len(rows), (task, split)
                for tokens, row in zip(encoded, rows):
                    assert dictionary.string(tokens) == " ".join(sp.encode(row[column], out_type=str)), (task, split)
            if split.startswith("test"):
                assert not (out / "label" / f"{name}.bin").exists() and not (out / "label" / f"{name}.label").exists()
            elif task == "STS-B":  # regression: the score over 5, as text
                values = (out / "label" / f"{name}.label").read_text().split()
                assert [float(v) for v in values] == pytest.approx([float(r[2]) / 5 for r in rows])
            else:
                labels = Dictionary.load(str(out / "label" / "dict.txt"))
                got = [labels.string(t) for t in load(out / "label" / name, labels)]
                assert got == [r[2] for r in rows], (task, split)
    assert "QQP: train 24" in glue["stdout"] and "1 malformed rows dropped" in glue["stdout"]
    assert ("MNLI: train 24, dev_matched 8, dev_mismatched 6, test_matched 5, test_mismatched 4 rows (3 classes, "
            "index order contradiction entailment neutral)") in glue["stdout"]  # sorted: not numbers 0..K-1


FINETUNE = [
    "--user-dir", PLUGIN, "--task", "sentence_prediction", "--criterion", "sentence_prediction",
    "--arch", "magic_child", "--child-arch", "MHA2,FFN", "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
    "--max-positions", "32", "--shorten-method", "truncate", "--init-token", "0", "--separator-token", "2",
    "--batch-size", "8", "--required-batch-size-multiple", "1", "--optimizer", "adam", "--lr", "1e-3",
    "--max-update", "3", "--cpu", "--num-workers", "0", "--log-format", "simple", "--no-save", "--seed", "1",
]


@pytest.mark.parametrize("task, extra", [
    ("RTE", ["--num-classes", "2"]),
    ("MNLI", ["--num-classes", "3", "--valid-subset", "valid,valid1"]),
    ("STS-B", ["--num-classes", "1", "--regression-target"]),
])
def test_prepared_folders_fine_tune_with_sentence_prediction(glue, task, extra):
    data = str(glue["root"] / "bin" / f"{task}-bin")
    proc = run([sys.executable, "-m", "fairseq_cli.train", data, *FINETUNE, *extra])
    log = proc.stdout + proc.stderr
    for subset in ("valid", "valid1") if task == "MNLI" else ("valid",):
        assert f"valid on '{subset}' subset" in log, log[-2000:]
    assert "nan" not in log.split("valid on")[-1]


def test_bad_glue_input_is_one_error_line(glue, spm_data, tmp_path):
    common = ["--out", str(tmp_path / "out"), "--spm", spm_data["spm"], "--dict", f"{spm_data['bin']}/dict.txt"]
    proc = magic("glue-prep", "--glue-dir", str(glue["root"] / "raw"), "--tasks", "RTE,SQuAD", *common, check=False)
    assert_one_error_line(proc, "unknown GLUE task 'SQuAD'")
    proc = magic("glue-prep", "--glue-dir", str(tmp_path / "nowhere"), *common, check=False)
    assert_one_error_line(proc, "GLUE directory not found")
    wrong = tmp_path / "wrong" / "RTE"
    wrong.mkdir(parents=True)
    for split in ("train", "dev"):  # SST-2's layout in RTE's folder
        (wrong / f"{split}.tsv").write_text("sentence\tlabel\na sentence\t1\n")
    proc = magic("glue-prep", "--glue-dir", str(tmp_path / "wrong"), *common, check=False)
    assert_one_error_line(proc, "RTE: ")
    assert "has no row with the task's 4 columns" in proc.stderr
    proc = magic("glue-prep", "--glue-dir", str(glue["root"] / "raw"), "--out", str(tmp_path / "o"), check=False)
    assert_one_error_line(proc, "needs --model")


@pytest.fixture(scope="module")
def child_export(spm_data, tmp_path_factory):
    """A child exported from a super-net pre-trained on the data whose dictionary glue-prep used."""
    root = tmp_path_factory.mktemp("glue_child")
    fairseq_train(spm_data["bin"], str(root / "supernet"), "--max-update", "3")
    magic("export", "--checkpoint", str(root / "supernet" / "checkpoint_last.pt"), "--arch", "MHA2,FFN,CONV3,FFN,MHA2,FFN",
          "--out", str(root / "child" / "model.pt"), "--sentencepiece-model", spm_data["spm"])
    return str(root / "child" / "model.pt")


CONFIGS = {"cola": "CoLA", "sst_2": "SST-2", "mrpc": "MRPC", "sts_b": "STS-B", "qqp": "QQP", "mnli": "MNLI",
           "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_glue_configs_fine_tune_a_child_under_hydra(glue, child_export, tmp_path, config):
    """Each task's config runs 5 updates on its glue-prep folder, with only the paths, the
    CPU and the tiny sizes overridden; the child's architecture comes from the checkpoint."""
    task = CONFIGS[config]
    proc = hydra_train(
        ROOT / "examples" / "glue" / "config", config, tmp_path, f"task.data={glue['root'] / 'bin' / f'{task}-bin'}",
        f"checkpoint.restore_file={child_export}", "task.max_positions=32", "optimization.max_update=5",
        "lr_scheduler.warmup_updates=1", "dataset.batch_size=4",
    )
    log = proc.stdout + proc.stderr
    assert "num_updates 5" in log or "num_updates=5" in log, log[-2000:]
    metric = {"cola": "mcc", "mrpc": "f1", "qqp": "f1", "sts_b": "pearson_and_spearman"}.get(config, "accuracy")
    assert f"| {metric} " in log.split("valid on 'valid' subset")[-1], log[-2000:]
    if config == "mnli":
        assert "valid on 'valid1' subset" in log
    state = load_state(str(tmp_path / "checkpoint_last.pt"))
    head = state["model"]["classification_heads.sentence_classification_head.out_proj.weight"]
    assert head.shape[0] == (1 if config == "sts_b" else 3 if config == "mnli" else 2)


def test_each_folder_gets_a_schedule_sized_to_its_rows(glue):
    """glue-prep writes finetune.yaml beside each task's data: E epochs at the task's batch, 6% warm-up."""
    from omegaconf import OmegaConf

    for task, splits in glue["expected"].items():
        rows, batch = len(splits["train"]), 16 if task in ("CoLA", "MRPC", "STS-B", "RTE", "WNLI") else 32
        updates = 10 * -(-rows // batch)
        config = OmegaConf.load(glue["root"] / "bin" / f"{task}-bin" / "finetune.yaml")
        assert config.optimization.max_update == config.lr_scheduler.total_num_update == updates, task
        assert config.lr_scheduler.warmup_updates == round(0.06 * updates) and config.dataset.batch_size == batch
        assert config.task.num_classes == (1 if task == "STS-B" else 3 if task == "MNLI" else 2)
        assert OmegaConf.is_missing(config.checkpoint, "restore_file")  # no --model: the user names the child
        assert f"--total-num-update {updates} --warmup-updates {round(0.06 * updates)}" in glue["stdout"]
    assert OmegaConf.load(glue["root"] / "bin" / "MNLI-bin" / "finetune.yaml").dataset.valid_subset == "valid,valid1"


def test_own_data_in_a_glue_layout_fine_tunes_from_the_written_config(finetuned, tmp_path):
    """reviews:SST-2: a folder of the user's own data; the config names the exported child, a
    learning rate for its size, and the updates of 2 epochs of 160 rows at batch 16."""
    assert "reviews: train 160, dev 60 rows (2 classes, index order 0 1)" in finetuned["prep"]
    assert "--batch-size 16 --max-epoch 2 --total-num-update 20 --warmup-updates 1 --lr 0.001" in finetuned["prep"]
    assert "layer parameters: under 1M" in finetuned["prep"]
    config = f"{finetuned['data']}/finetune.yaml"
    proc = run([sys.executable, "-m", "fairseq_cli.hydra_train", "--config-dir", finetuned["data"], "--config-name",
                "finetune", f"checkpoint.save_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'hydra'}",
                "common.cpu=true", "task.max_positions=32", "optimization.max_update=3"])
    log = proc.stdout + proc.stderr
    assert "num_updates 3" in log and "| accuracy " in log, log[-2000:]
    assert "Loaded checkpoint" in log and str(finetuned["child"]) in open(config).read()
