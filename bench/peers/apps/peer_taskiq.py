"""taskiq app on taskiq-redis's RedisStreamBroker (acknowledged delivery; the ListQueueBroker has no acks).
`taskiq worker peer_taskiq:broker`; delayed jobs go through a ListRedisScheduleSource read by
`taskiq scheduler peer_taskiq:scheduler`."""
from _stamp import URL, record_async
from taskiq import TaskiqScheduler
from taskiq_redis import ListRedisScheduleSource, RedisStreamBroker

broker = RedisStreamBroker(URL, queue_name="bench")
source = ListRedisScheduleSource(URL)
scheduler = TaskiqScheduler(broker, sources=[source])


@broker.task(task_name="noop")
async def noop() -> None:
    return None


@broker.task(task_name="stamp")
async def stamp(i: int) -> None:
    await record_async(i)
