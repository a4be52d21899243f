"""tasks.instruction_words=false: prompts keep their fields and drop the templates' words."""

from ttds.llm.backbone import BackboneConfig, load_backbone
from ttds.llm.prompts import IGNORE, PromptBuilder, TokenTable

import numpy as np


def _builder(words: bool) -> PromptBuilder:
    _, tok = load_backbone(BackboneConfig(name="tiny-llama", hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64),
                           ["a red guitar", "drum sticks"])
    items = TokenTable(np.array([[5, 6], [7, 8], [9, 10]], dtype=np.int64), np.array([2, 2, 2]))
    return PromptBuilder(tok, items, None, item_titles=["a red guitar", "drum sticks", "a capo"], next_item_user_id=False, instruction_words=words)


def test_without_words_a_prompt_is_bos_and_its_fields():
    plain, worded = _builder(False), _builder(True)
    ids, labels = plain.next_item(0, [0, 2], 1)
    assert ids == plain.bos + [5, 6, 9, 10]
    assert labels == [IGNORE] * len(plain.bos) + [5, 6, 9, 10]
    assert plain.next_item_prompt(0, [1]) == plain.bos + [7, 8]
    assert len(worded.next_item_prompt(0, [1])) > len(plain.next_item_prompt(0, [1]))  # the words are really gone
    ids, labels = plain.id2text(1)
    assert ids[: len(plain.bos) + 2] == plain.bos + [7, 8] and labels[: len(plain.bos) + 2] == [IGNORE] * (len(plain.bos) + 2)
