"""Webhooks: parse Prism's template callbacks safely, and let waits finish when they arrive.

Prism does not sign its webhooks: anyone who learns the URL can post a forged "completed" with
a video URL of their choosing. So here a webhook is only ever a *hint*:

* :class:`WebhookHub` gives you a URL carrying a random token (``hub.url_for(...)``) and
  rejects requests without it (401, constant-time comparison), bodies over ``max_body`` (413)
  and malformed payloads (400);
* a wait on a client made with ``PrismClient(webhooks=hub)`` wakes up when the hub receives a
  terminal event for its id, then confirms with one ``GET /api/generations/:id``: a forged
  payload can wake a wait early but never decide its result or its ``video_url``;
* waits on generations submitted with the hub's URL poll slowly (``fallback_interval``) in
  case a webhook never comes, until the hub is closed;
* with a bus (``RedisWebhookBus``), a webhook received by one process wakes the waits of all;
  while the bus is down, the events it could not carry are kept and published once it is back,
  and waits poll at their normal cadence (``prism_async.webhooks._link``).
"""

from ._bus import RedisWebhookBus, WebhookBus
from ._event import InvalidWebhookError, WebhookEvent, WebhookReply, parse_webhook
from ._hub import KEY_PARAM, TOKEN_PARAM, WebhookHub

__all__ = [
    "KEY_PARAM",
    "TOKEN_PARAM",
    "InvalidWebhookError",
    "RedisWebhookBus",
    "WebhookBus",
    "WebhookEvent",
    "WebhookHub",
    "WebhookReply",
    "parse_webhook",
]
