"""The example tasks `corral up` runs (actionhero's seed tasks, in Python)."""

from typing import Any

from cluster import JobContext, Task, task


@task(name="sendWelcomeEmail", queue="default", description="Welcomes a new user (logs instead of mailing)")
async def send_welcome_email(params: dict[str, Any], ctx: JobContext) -> None:
    to = params.get("to")
    if not isinstance(to, str) or "@" not in to:
        raise ValueError(f"params.to must be an e-mail address, got {to!r}")
    ctx.log.info("would send a welcome e-mail", extra={"to": to})


async def hello(params: dict[str, Any], ctx: JobContext) -> None:
    ctx.log.info("hello")


async def goodbye(params: dict[str, Any], ctx: JobContext) -> None:
    ctx.log.info("goodbye")


say_hello = Task(name="sayHello", description="I say hello", queue="default", frequency=1.0, run=hello)
say_goodbye = Task(name="sayGoodbye", description="I say goodbye", queue="default", frequency=2.0, run=goodbye)
