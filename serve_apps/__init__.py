"""Ray Serve applications of ttds (`serve run serve_apps/config.yaml`); see serve_apps/app.py."""
