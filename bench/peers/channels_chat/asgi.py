"""The Channels peer's ASGI application, as the Channels docs deploy one.

    BENCH_JWT_SECRET=… REDIS_URL=redis://… python -m uvicorn asgi:application \\
        --app-dir bench/peers/channels_chat --host 127.0.0.1 --port 8301 \\
        --loop uvloop --http httptools --no-access-log

`AllowedHostsOriginValidator` as the Channels tutorial has it (the load
generator sends an `Origin` of the host it connects to).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for peers/common.py
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from consumers import ChatConsumer  # noqa: E402
from django.urls import path  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            URLRouter([path("ws/chat/", ChatConsumer.as_asgi())])
        ),
    }
)
