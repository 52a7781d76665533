"""The schedule: the scheduler's loop, publishing delivery messages, and waking schedulers.

``loop`` runs the passes that hand due rows to the broker; ``publishing`` groups them into messages
and publishes a forced one at once; ``wakeups`` is the one way to tell schedulers to look now.
The database is the schedule; its queries are in ``storage.schedule``.
"""

from actors.scheduler.loop import Scheduler, SchedulerMiddleware, dispatch_due
from actors.scheduler.publishing import message_id_for, publish_now
from actors.scheduler.wakeups import wake, wake_now

__all__ = [
    "Scheduler",
    "SchedulerMiddleware",
    "dispatch_due",
    "message_id_for",
    "publish_now",
    "wake",
    "wake_now",
]
