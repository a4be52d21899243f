"""ttds: a Ray-based platform for LLM generative recommenders with learned semantic IDs.

The package follows the TTDS method (Twin-Tower Dynamic Semantic Recommender,
arXiv 2409.09253): a twin-tower residual-quantisation tokenizer gives every item and
user a hierarchical semantic ID, an LLM backbone is extended with those tokens and
trained to generate the next item's ID, and the index is re-learned as the backbone
learns.
"""

__version__ = "0.1.0"
