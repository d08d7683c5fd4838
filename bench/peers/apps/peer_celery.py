"""Celery app on the Redis broker (`celery -A peer_celery worker -Q bench`). No result backend."""
from _stamp import URL, record_sync
from celery import Celery

app = Celery("peer_celery", broker=URL)
app.conf.task_default_queue = "bench"
app.conf.broker_connection_retry_on_startup = True  # silences the 5.x start-up deprecation warning


@app.task(name="noop")
def noop():
    return None


@app.task(name="stamp")
def stamp(i):
    record_sync(i)
