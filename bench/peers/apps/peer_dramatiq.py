"""dramatiq actors on the Redis broker (`dramatiq peer_dramatiq`)."""
import dramatiq
from _stamp import URL, record_sync
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=URL)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="bench", actor_name="noop")
def noop():
    return None


@dramatiq.actor(queue_name="bench", actor_name="stamp")
def stamp(i):
    record_sync(i)
