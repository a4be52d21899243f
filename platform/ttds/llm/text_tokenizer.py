"""A small byte-level BPE tokenizer trained on the corpus itself.

WHY: the default backbone is a tiny Llama built in code, and no model hub is reachable, so
its text vocabulary has to come from somewhere local. Byte-level BPE over prompt templates
and item titles gives a vocabulary fitted to the data, encodes *any* string (every byte is in
the base alphabet, so there is never an unknown character) and trains in well under a second.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)

# Words every instruction prompt is likely to use, so they get merges even when the corpus
# passed in holds item titles only. Fixed text: it keeps the tokenizer a function of the corpus.
TEMPLATE_TEXTS: tuple[str, ...] = (
    "Below is an instruction that describes a task. Write a response that completes the request.",
    "### Instruction: ### Response: ### Input:",
    "The user has interacted with the following items in chronological order:",
    "Given the user's purchase history, predict the next item the user will buy.",
    "Can you recommend the next item for this user? Recommend one item.",
    "Here is the interaction history of a user. Which item would the user like next?",
    "Based on the item, which user is most likely to interact with it?",
    "The user wrote this review about the item. Which item does the review describe?",
    "The user searched for the following query. What item matches the query?",
    "Item title: Item description: Brand: Categories: Review: Query: User:",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 , . ; : ! ? ' \" ( ) [ ] - / & + # %",
)


def build_text_tokenizer(texts: Iterable[str], vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts` and wrap it as a HF fast tokenizer.

    Deterministic: the same texts in the same order give the same vocabulary and merges
    (the BPE trainer breaks count ties by pair, so no hash order leaks in).
    Padding is on the left because decoding appends generated tokens on the right of a batch.
    A `<s>` is prepended when `add_special_tokens=True` (Llama's convention); pass
    `add_special_tokens=False` to tokenize a continuation.
    """
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size} cannot hold the 256-byte alphabet plus special tokens")
    backend = Tokenizer(models.BPE(unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [t for t in texts if t]
    backend.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, backend.token_to_id(BOS))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
