"""Start the service with whatever the environment says: `python run.py`."""

from mailer.cli import load_settings, serve

if __name__ == "__main__":
    raise SystemExit(serve(load_settings()))
