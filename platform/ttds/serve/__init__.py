"""Serving: the trained model as one in-process object (`recommender.Recommender`: load a model
folder, resolve users, delegate ranking to `ttds.rank`), and the Ray Serve app over it.

The Serve app (`serve_apps/`) only adds transport, batching and rollout; routing a request to
a ranking part is `recommender.route`, the one rule both use.
"""
