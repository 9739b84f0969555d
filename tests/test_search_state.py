"""SearchState (models/search_state.py): what a checkpoint stores, under the names it always had."""

from fairseq_magic.training.anchor import Anchor
from fairseq_magic.models.search_state import SearchState
from fairseq_magic.space import SearchSpace

SPACE = SearchSpace.build(6, "MHA2,FFN,CONV3,CONV5", hidden_dim=32, ffn_dim=64)


def test_search_state_reads_and_writes_the_checkpoint_names():
    """The search state is saved as it always was (last_update, last_child, anchor, ...),
    so checkpoints of earlier versions resume; holders of the object see a load."""
    state = SearchState()
    anchor = Anchor(SPACE, state, seed=0)
    saved = {"last_update": 7, "last_child": "FFN,FFN,MHA2,CONV3,CONV5,FFN", "allowed": [[0, 1]] * 6,
             "anchor": {"arch": "FFN,FFN,FFN,FFN,FFN,FFN", "score": -5.0, "replacements": 2}, "from_a_later_version": 1}
    state.load_dict(saved)
    assert (state.update, state.child, state.allowed) == (7, saved["last_child"], saved["allowed"])
    assert anchor.chosen and anchor.child == (1,) * 6
    assert state.to_dict() == {k: v for k, v in saved.items() if k != "from_a_later_version"}
    state.load_dict({})
    assert state == SearchState() and not anchor.chosen
