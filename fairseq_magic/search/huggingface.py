"""A plain-Transformer child as a Hugging Face ``transformers`` RoBERTa folder.

The child's weights, under fairseq's RoBERTa names (``export.roberta_state_dict``),
map one to one onto ``transformers``' RoBERTa (post-LayerNorm layers, learned
positions after the padding index, an embedding LayerNorm, a tied masked-LM
head, RoBERTa's classification head), as ``transformers``' own conversion
script maps fairseq's RoBERTa. The tokenizer is a fast Unigram tokenizer built
from the sentencepiece model's pieces and normaliser, with fairseq's
dictionary order as its ids (``<s> <pad> </s> <unk>``, the dictionary,
``<mask>``), so that ids are the ones the embedding rows were trained for;
pieces the dictionary lacks are left out of the vocabulary (fairseq maps them
to ``<unk>``). Sentence pairs are ``<s> a </s> </s> b </s>``, as fairseq's
``sentence_prediction`` builds them.
"""

import os
from typing import Dict, List

import torch

from ..errors import MagicError

HF_EXTRA = "pip install 'fairseq-magic[huggingface]' (transformers and protobuf)"
_LAYER_NAMES = {
    "self_attn.q_proj": "attention.self.query", "self_attn.k_proj": "attention.self.key",
    "self_attn.v_proj": "attention.self.value", "self_attn.out_proj": "attention.output.dense",
    "self_attn_layer_norm": "attention.output.LayerNorm", "fc1": "intermediate.dense", "fc2": "output.dense",
    "final_layer_norm": "output.LayerNorm",
}


def _require_transformers():
    try:
        import transformers  # noqa: F401
        from transformers.convert_slow_tokenizer import import_protobuf

        import_protobuf()
    except ImportError as err:
        raise MagicError(f"--format huggingface needs {err.name or 'transformers'}: {HF_EXTRA}") from None


def huggingface_state_dict(weights: Dict[str, torch.Tensor], head: str = "") -> Dict[str, torch.Tensor]:
    """fairseq RoBERTa weights under ``transformers``' RoBERTa names (``head``: the classification
    head to keep as ``classifier``; '' keeps the masked-LM head as ``lm_head``)."""
    out = {}
    encoder = "encoder.sentence_encoder."
    for key, value in weights.items():
        if key.startswith(encoder + "layers."):
            j, rest = key[len(encoder + "layers."):].split(".", 1)
            module, param = rest.rsplit(".", 1)
            out[f"roberta.encoder.layer.{j}.{_LAYER_NAMES[module]}.{param}"] = value
        elif key.startswith(encoder):
            rest = key[len(encoder):]
            name = {"embed_tokens.weight": "word_embeddings.weight",
                    "embed_positions.weight": "position_embeddings.weight",
                    "layernorm_embedding.weight": "LayerNorm.weight",
                    "layernorm_embedding.bias": "LayerNorm.bias"}.get(rest)
            if name is not None:
                out[f"roberta.embeddings.{name}"] = value
        elif key.startswith("encoder.lm_head.") and not head:
            rest = key[len("encoder.lm_head."):]
            name = {"weight": "decoder.weight", "bias": "bias"}.get(rest, rest)
            out[f"lm_head.{name}"] = value
            if rest == "bias":
                out["lm_head.decoder.bias"] = value
        elif head and key.startswith(f"classification_heads.{head}."):
            out["classifier." + key[len(f"classification_heads.{head}."):]] = value
    hidden = out["roberta.embeddings.word_embeddings.weight"].shape[1]
    out["roberta.embeddings.token_type_embeddings.weight"] = torch.zeros(1, hidden)
    return out


def build_tokenizer(sentencepiece_model: str, symbols: List[str], max_length: int):
    """A ``PreTrainedTokenizerFast`` whose ids are fairseq's dictionary indices."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import import_protobuf

    proto = import_protobuf().ModelProto()
    with open(sentencepiece_model, "rb") as f:
        proto.ParseFromString(f.read())
    scores = {piece.piece: piece.score for piece in proto.pieces}
    floor = min(scores.values()) - 10.0  # fillers (madeupword...) and <mask>: never chosen to segment text
    specials = {"<s>", "<pad>", "</s>", "<unk>", "<mask>"}
    vocab = [(s, 0.0 if s in specials else scores.get(s, floor)) for s in symbols]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=symbols.index("<unk>"), byte_fallback=False))
    charsmap = proto.normalizer_spec.precompiled_charsmap
    steps = [normalizers.Precompiled(charsmap)] if charsmap else []
    if proto.normalizer_spec.remove_extra_whitespaces:  # as sentencepiece: no space at the ends, none doubled
        steps += [normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")]
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    bos, eos = symbols.index("<s>"), symbols.index("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>", model_max_length=max_length)


def write_huggingface(source, out_dir: str, sentencepiece_model: str, weights: Dict[str, torch.Tensor]) -> None:
    """``out_dir``: config, weights and tokenizer of ``source`` (an ``export.ExportSource``) for
    ``transformers``; ``weights``: its fairseq RoBERTa state dict."""
    _require_transformers()
    from fairseq.data import Dictionary
    from transformers import RobertaConfig, RobertaForMaskedLM, RobertaForSequenceClassification

    space, child, cfg = source.space, source.child, source.cfg["model"]
    ops = [space.candidates[c] for c in child]
    dictionary = Dictionary.load(source.dictionary)
    symbols = list(dictionary.symbols)
    if "<mask>" not in symbols and len(symbols) < source.vocab_size:
        symbols.append("<mask>")  # masked_lm and sentence_prediction add it after the dictionary
    if len(symbols) != source.vocab_size:
        raise MagicError(f"{source.dictionary} has {len(symbols)} symbols, the model's embeddings "
                         f"{source.vocab_size}: not the dictionary it was trained with")
    heads = source.heads
    head = "sentence_classification_head" if "sentence_classification_head" in heads else next(iter(heads), "")
    labels = []
    if head and source.label_dictionary:
        labels = Dictionary.load(source.label_dictionary).symbols[dictionary.nspecial:]
    config = RobertaConfig(
        vocab_size=source.vocab_size, hidden_size=space.hidden_dim, num_hidden_layers=len(ops) // 2,
        num_attention_heads=ops[0].size, intermediate_size=ops[1].size,
        hidden_act=str(cfg.get("activation_fn", "gelu")), hidden_dropout_prob=float(cfg.get("dropout", 0.1)),
        attention_probs_dropout_prob=float(cfg.get("attention_dropout", 0.0)),
        max_position_embeddings=source.max_positions + 2, type_vocab_size=1, layer_norm_eps=1e-5,
        pad_token_id=dictionary.pad(), bos_token_id=dictionary.bos(), eos_token_id=dictionary.eos(),
        classifier_dropout=float(cfg.get("pooler_dropout", 0.0)),
    )
    if head:
        config.num_labels = heads[head]
        if len(labels) == heads[head]:
            config.id2label = dict(enumerate(labels))
            config.label2id = {label: i for i, label in enumerate(labels)}
        model = RobertaForSequenceClassification(config)
    else:
        model = RobertaForMaskedLM(config)
    state = huggingface_state_dict(weights, head)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise MagicError(f"the child's weights do not fit transformers' RoBERTa: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    build_tokenizer(sentencepiece_model, symbols, source.max_positions).save_pretrained(out_dir)
