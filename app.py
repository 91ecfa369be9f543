"""WSGI entry point: `gunicorn app:app` or `flask --app app run`."""

from citizen_lookup import create_app

app = create_app()
