"""Corpus layer: readers, validation, k-core, leave-one-out split, Ray Data streams."""
