"""Firebase Cloud Messaging, HTTP v1: the documented REST call, with a service account's OAuth2 token."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any
from urllib.parse import quote

import google.auth.exceptions
import google.auth.transport.requests
import requests
from google.oauth2 import service_account

from actors.providers.base import (
    Device,
    DeviceGone,
    NotConfigured,
    PermanentDeliveryError,
    PushMessage,
    TransientDeliveryError,
    http_failure,
)
from actors.providers.sessions import ThreadSessions
from actors.providers.webhook import parse_retry_after

logger = logging.getLogger(__name__)

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
# errorCode values that say the registration token is dead, whatever the HTTP status.
_GONE_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})


def message_body(device: Device, message: PushMessage) -> dict[str, Any]:
    """The ``messages:send`` document: FCM's ``data`` holds strings only, so others go as JSON."""
    data = {"notification_id": message.notification_id}
    for key, value in (message.data or {}).items():
        if key != "notification_id":
            data[key] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    notification = {"body": message.content}
    if message.title is not None:
        notification = {"title": message.title, **notification}
    android: dict[str, str] = {
        "ttl": f"{message.ttl}s",
        "priority": "high" if message.urgency == "high" else "normal",
    }
    if message.collapse_key:
        android["collapse_key"] = message.collapse_key
    return {
        "message": {"token": device.address, "notification": notification, "data": data, "android": android}
    }


class _TokenRequest(google.auth.transport.requests.Request):
    """google-auth's transport, with our timeout instead of its two minutes."""

    def __init__(self, session: requests.Session, timeout: float) -> None:
        super().__init__(session)
        self._timeout = timeout

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["timeout"] = self._timeout
        return super().__call__(*args, **kwargs)


class FcmSender:
    """Sends to FCM registration tokens of one Firebase project."""

    kind = "fcm"

    def __init__(
        self,
        *,
        credentials_file: str,
        project_id: str = "",
        url: str = "https://fcm.googleapis.com",
        timeout: float = 10.0,
    ) -> None:
        try:
            self._credentials = service_account.Credentials.from_service_account_file(
                credentials_file, scopes=[SCOPE]
            )
        except (OSError, ValueError, KeyError) as exc:
            raise NotConfigured(
                f"FCM_CREDENTIALS_FILE {credentials_file} is no service-account file: {exc}"
            ) from None
        project = project_id or self._credentials.project_id
        if not project:
            raise NotConfigured("FCM_PROJECT_ID is unset and FCM_CREDENTIALS_FILE holds no project_id")
        self.project = project
        self.url = f"{url.rstrip('/')}/v1/projects/{quote(project, safe='')}/messages:send"
        self.timeout = timeout
        # One token for the process, refreshed by whichever thread finds it about to expire.
        self._token_lock = threading.Lock()
        self._token_request = _TokenRequest(requests.Session(), timeout)
        self._sessions = ThreadSessions(requests.Session)

    def __repr__(self) -> str:
        return f"FcmSender({self.project})"

    def send(self, device: Device, message: PushMessage) -> str:
        """POST one message; returns FCM's ``name`` for it."""
        body = json.dumps(message_body(device, message), ensure_ascii=False).encode()
        headers = {
            "Authorization": f"Bearer {self._access_token()}",
            "Content-Type": "application/json; charset=utf-8",
        }
        try:
            response = self._sessions.get().post(
                self.url, data=body, headers=headers, timeout=self.timeout, allow_redirects=False
            )
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise TransientDeliveryError(f"FCM: {exc!r}") from None
        except requests.RequestException as exc:
            raise PermanentDeliveryError(f"FCM: {exc!r}") from None
        status = response.status_code
        document = _json(response)
        if status == 200:
            logger.debug("Sent %s to device %s via FCM", message.notification_id, device.id)
            return str(document.get("name", ""))
        error = document.get("error")
        if not isinstance(error, dict):
            error = {}
        details = [d for d in error.get("details", []) if isinstance(d, dict)]
        codes = [str(d["errorCode"]) for d in details if "errorCode" in d]
        fields = [
            v.get("field") for d in details for v in d.get("fieldViolations", []) if isinstance(v, dict)
        ]
        what = codes[0] if codes else error.get("status", "")
        reason = f"FCM: HTTP {status} {what}: {str(error.get('message', ''))[:200]}".rstrip(": ")
        if _GONE_CODES.intersection(codes):
            raise DeviceGone(reason)
        if status == 400 and "message.token" in fields:  # INVALID_ARGUMENT about the token itself
            raise DeviceGone(reason)
        if status == 401:
            logger.error(
                "FCM refused our credentials (check FCM_CREDENTIALS_FILE, FCM_PROJECT_ID): %s", reason
            )
            raise TransientDeliveryError(reason)
        raise http_failure(status, reason, parse_retry_after(response.headers.get("Retry-After")))

    def close(self) -> None:
        """Close every thread's kept connections."""
        self._sessions.close()
        self._token_request.session.close()

    def _access_token(self) -> str:
        with self._token_lock:
            # valid is False with no token yet, and from 3m45s before its expiry on (google-auth's margin).
            if not self._credentials.valid:
                try:
                    self._credentials.refresh(self._token_request)
                except google.auth.exceptions.RefreshError as exc:
                    logger.error("FCM token endpoint refused our credentials (FCM_CREDENTIALS_FILE): %s", exc)
                    raise TransientDeliveryError(f"FCM credentials: {exc}") from None
                except google.auth.exceptions.TransportError as exc:
                    raise TransientDeliveryError(f"FCM token endpoint: {exc}") from None
            return str(self._credentials.token)


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        document = response.json()
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}
