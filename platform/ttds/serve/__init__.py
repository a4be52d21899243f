"""Serving: the in-process recommender and the Ray Serve application."""
