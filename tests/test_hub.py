"""Loading a trained super-net through fairseq's hub interface (torch 2.13 checkpoints)."""

import torch
from fairseq.models.roberta import RobertaHubInterface

from conftest import PLUGIN, fairseq_train
from fairseq_magic.models.supernet import MagicSupernetModel


def test_from_pretrained_loads_a_supernet_checkpoint(spm_data, tmp_path):
    fairseq_train(spm_data["bin"], str(tmp_path), "--max-update", "3", "--align-lambda", "0.5",
                  "--align-every", "3", "--align-warmup-epochs", "0", "--sampler", "gradual")
    hub = MagicSupernetModel.from_pretrained(
        str(tmp_path), checkpoint_file="checkpoint_last.pt", data_name_or_path=spm_data["bin"],
        bpe="sentencepiece", sentencepiece_model=spm_data["spm"], user_dir=PLUGIN,
    )
    assert isinstance(hub, RobertaHubInterface)
    hub.eval()
    assert hub.model.search_state.update == 2 and hub.model.search_state.anchor.arch
    tokens = hub.encode("tok1 tok5 tok7 tok3")
    assert hub.decode(tokens) == "tok1 tok5 tok7 tok3"
    hub.model.set_child("MHA2,FFN,CONV3,CONV5,FFN,MHA2")
    features = hub.extract_features(tokens)
    assert features.shape == (1, len(tokens), 32)
    all_layers = hub.extract_features(tokens, return_all_hiddens=True)
    assert len(all_layers) == 7 and torch.equal(all_layers[-1], features)
