"""Serving: the in-process recommender and the Ray Serve application.

`recommender.Recommender` loads a model folder, resolves users and delegates ranking to
`ttds.rank` (routing a request to a ranking part is `recommender.route`, the one rule);
`app` adds transport, batching, admission, health and rollout; `serve_apps/` keeps the Serve
config and a thin entry point.
"""
