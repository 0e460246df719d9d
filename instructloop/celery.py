"""The Celery app. Broker: Redis when CELERY_BROKER_URL is set, else a local filesystem broker."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "instructloop.settings")

app = Celery("instructloop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
