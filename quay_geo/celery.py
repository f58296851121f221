"""The Celery application shared by web and worker processes.

Replication tasks go to one queue per target location (``replicate.<location ID>``) plus a
short ``replicate.priority`` queue. A worker started with ``-Q`` serves only what it names; a
worker started without it serves every queue, including those of locations added while it runs
(checked every 30 s), so a single machine needs no routing setup.
"""

import logging
import os
from typing import Any

from celery import Celery, bootsteps, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "quay_geo.settings")

logger = logging.getLogger(__name__)

app = Celery("quay_geo")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def replication_queue_names() -> list[str]:
    """Return the names of every replication queue for the configured locations."""
    from replication.models import StorageLocation
    from replication.tasks import PRIORITY_QUEUE, queue_of

    ids = StorageLocation.objects.values_list("location_id", flat=True)
    return [PRIORITY_QUEUE, *(queue_of(location_id) for location_id in ids)]


class LocationQueues(bootsteps.StartStopStep):
    """Consume the queue of every location unless the worker was given explicit queues."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.timer_ref: Any = None

    def start(self, parent: Any) -> None:
        if parent.app.amqp.queues._consume_from is not None:
            return
        self.refresh(parent)
        self.timer_ref = parent.timer.call_repeatedly(30.0, self.refresh, (parent,), priority=10)

    def stop(self, parent: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()

    def refresh(self, parent: Any) -> None:
        from django.db import close_old_connections

        try:
            names = replication_queue_names()
        except Exception:
            logger.exception("could not list replication queues")
            return
        finally:
            close_old_connections()
        consuming = {queue.name for queue in parent.task_consumer.queues}
        for name in names:
            if name not in consuming:
                parent.add_task_queue(name)
                logger.info("consuming %s", name)


app.steps["consumer"].add(LocationQueues)


@signals.worker_init.connect
def _check_preference(**kwargs: Any) -> None:
    """Refuse to start a worker whose storage preference names an unknown location."""
    from replication.selectors import preference_check_at_start

    from .memory import malloc_tune

    malloc_tune()  # the pool processes fork from here and inherit it
    preference_check_at_start()


@signals.worker_process_init.connect
def _warm_engines(**kwargs: Any) -> None:
    """Build the storage engines of a new pool process in the background.

    In a thread: the pool gives a process a few seconds to report ready, and building boto3
    clients in four processes at once on two cores can take that long.
    """
    import threading

    from replication.selectors import engines_warm

    threading.Thread(target=engines_warm, name="engines-warm", daemon=True).start()
