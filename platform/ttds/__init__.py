"""ttds: a Ray-based platform for LLM generative recommenders with learned semantic IDs.

The package follows the TTDS method (Twin-Tower Dynamic Semantic Recommender,
arXiv 2409.09253): a twin-tower residual-quantisation tokenizer gives every item and
user a hierarchical semantic ID, an LLM backbone is extended with those tokens and
trained to generate the next item's ID, and the index is re-learned as the backbone
learns.
"""

__version__ = "0.1.0"

import os as _os

# Ray reads this when it is imported: set it before any `import ray`, so a local Ray started
# through ttds binds 127.0.0.1 (with `_node_ip_address` in ttds.runtime.init_ray).
_os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
