"""WSGI entry point: `gunicorn -c gunicorn.conf.py app:app` or `flask --app app run`."""

from citizen_lookup import create_app
from citizen_lookup.startup import exit_on_refusal

# serving=True: outside CITIZEN_LOOKUP_ENV=development, refuse to start without a database URL
# and the keys that go with it (one message naming each, no traceback) rather than fall back to
# the embedded default.
with exit_on_refusal():
    app = create_app(serving=True)
