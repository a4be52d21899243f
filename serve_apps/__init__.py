"""Ray Serve config of ttds (`serve run serve_apps/config.yaml`); the app itself is ttds.serve.app."""
