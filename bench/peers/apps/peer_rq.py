"""RQ jobs (module-level functions, referenced by import path)."""
from _stamp import record_sync


def noop():
    return None


def stamp(i):
    record_sync(i)
