"""Django settings of the Channels peer: no database, no templates, production flags.

The channel layer is channels_redis's `RedisChannelLayer`, the layer the
Channels docs name for production, with its default capacity and expiry.
"""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "bench-only-not-a-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["channels"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "urls"
DATABASES: dict[str, object] = {}
USE_TZ = True
ASGI_APPLICATION = "asgi.application"
LOGGING_CONFIG = None
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")],
            # one namespace per benchmark run, so that runs sharing a Redis never meet
            "prefix": os.environ.get("CHANNELS_PREFIX", "asgi"),
        },
    }
}
