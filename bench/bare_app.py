"""Flask answering a JSON POST with 202 and nothing else: the ceiling of the framework on this machine.

``gunicorn bench.bare_app:app``, with the service's worker class, processes and threads, is what
the ingest benchmark measures the service against.
"""

from __future__ import annotations

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/notifications/push")
def accept():
    request.get_json()
    return jsonify(status="success", notification_id="00000000-0000-4000-8000-000000000000"), 202
