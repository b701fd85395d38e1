"""gunicorn for the portal: ASGI workers so Server-Sent Events do not hold a thread each."""

import os

bind = os.environ.get("SIPCLOUD_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "uvicorn_worker.UvicornWorker"
wsgi_app = "config.asgi:application"
timeout = 60
graceful_timeout = 20
accesslog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
