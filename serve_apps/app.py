"""Entry point for `serve run serve_apps/config.yaml` / `serve deploy`: the app lives in the package.

`import_path: serve_apps.app:build_app` keeps working for configs written before the move; the
code is `ttds.serve.app` (installed with the package, so every Ray node has it).
"""

from ttds.serve.app import Ingress, Ranker, UserEncoder, build_app, compose

__all__ = ["Ingress", "Ranker", "UserEncoder", "build_app", "compose"]
