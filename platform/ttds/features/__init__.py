"""Inputs X of the semantic token generator: collaborative vectors and text embeddings."""
