"""WSGI entry point: `gunicorn app:app` or `flask --app app run`."""

from citizen_lookup import create_app

# serving=True: outside CITIZEN_LOOKUP_ENV=development, refuse to start without a database URL
# and an audit key rather than fall back to the embedded default.
app = create_app(serving=True)
