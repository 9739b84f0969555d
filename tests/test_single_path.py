"""One-child-per-update training runs (training/single_path.py): MAGIC-T's walk, interference
samples, MAGIC-AT's exact resume, and two gloo ranks."""

import torch

from conftest import fairseq_train, launch_ranks, load_state, read_child_log, train_log
from fairseq_magic.space import SearchSpace, hamming

SPACE = SearchSpace.build(6, "MHA2,FFN,CONV3,CONV5", hidden_dim=32, ffn_dim=64)
AT = [
    "--sampler", "gradual", "--gradual-k", "1", "--align-lambda", "0.5", "--align-every", "2",
    "--align-warmup-epochs", "0", "--anchor-eval-interval", "2", "--score-sentences", "16",
    "--anchor-metric", "loss", "--anchor-init-children", "6",
]


def test_interference_during_training_is_logged_and_leaves_training_alone(data_bin, tmp_path):
    plain = fairseq_train(data_bin, str(tmp_path / "a"), "--max-update", "4")
    probed = fairseq_train(data_bin, str(tmp_path / "b"), "--max-update", "4", "--interference-interval", "2")
    records = train_log(probed)
    assert [r["loss"] for r in records] == [r["loss"] for r in train_log(plain)]
    cos = [float(r["interference_cos"]) for r in records if r.get("interference_cos") is not None]
    assert cos and all(-1.0 <= c <= 1.0 for c in cos) and "interference_s" in records[-1]


def test_magic_t_training_changes_k_operators_per_update(data_bin, tmp_path):
    log = str(tmp_path / "children.jsonl")
    fairseq_train(data_bin, str(tmp_path), "--max-update", "12", "--sampler", "gradual", "--gradual-k", "2",
                  "--update-freq", "2", "--child-log", log)
    records = read_child_log(log)
    children = [SPACE.parse(r["child"]) for r in records[::2]]
    assert [r["child"] for r in records[::2]] == [r["child"] for r in records[1::2]]  # micro-batches agree
    assert len(children) == 12 and all(hamming(a, b) == 2 for a, b in zip(children, children[1:]))


def test_magic_at_resume_is_exact(data_bin, tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    # children part quickly, the first anchor is weak, any improvement replaces it (the old rule, ablation 2)
    # and it is checked every update, so that the anchor changes in both halves
    at = [*AT, "--lr", "0.005", "--anchor-replace-z", "0", "--anchor-eval-interval", "1",
          "--anchor-arch", "CONV5,CONV5,CONV5,CONV5,CONV5,CONV5"]
    p_full = fairseq_train(data_bin, str(full), "--max-update", "12", "--child-log", str(full / "c.jsonl"), *at)
    fairseq_train(data_bin, str(split), "--max-update", "6", "--child-log", str(split / "c.jsonl"), *at)
    p_res = fairseq_train(data_bin, str(split), "--max-update", "12", "--child-log", str(split / "c.jsonl"), *at)
    log_full, log_split = read_child_log(str(full / "c.jsonl")), read_child_log(str(split / "c.jsonl"))
    assert log_full == log_split  # children, anchors and weight checksums
    anchors = [r["anchor"] for r in log_full]
    assert len(set(anchors[:6])) > 1 and len(set(anchors[6:])) > 1, "the anchor should change in both halves"
    keys = ("loss", "mlm_loss", "align_loss")
    assert [[r[k] for k in keys] for r in train_log(p_full)][6:] == [[r[k] for k in keys] for r in train_log(p_res)]
    a = load_state(str(full / "checkpoint_last.pt"))["model"]
    b = load_state(str(split / "checkpoint_last.pt"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["search_state"].numel() > 0


def test_magic_at_two_gloo_ranks_agree(data_bin, tmp_path):
    log = str(tmp_path / "children.jsonl")
    launch_ranks(data_bin, str(tmp_path), log, 6, extra=AT)
    rank0, rank1 = read_child_log(log), read_child_log(log + ".rank1")
    strip = [{k: v for k, v in r.items() if k != "rank"} for r in rank0]
    assert strip == [{k: v for k, v in r.items() if k != "rank"} for r in rank1]  # children, anchors, weights
    assert len(rank0) == 6 and len({r["weights"] for r in rank0}) == 6
