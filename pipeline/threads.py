"""Threads where they pay: waiting on a server, and C code that drops the GIL.

Beam runs a DoFn in one thread; these helpers let it use the machine's other
cores for the work that does not hold the GIL (MariaDB's replies, Arrow's CSV
writer, zlib).
"""
import concurrent.futures
import os
import queue
import threading

_pool = None
_pool_lock = threading.Lock()


def ordered_map(function, items):
    """``[function(item) for item in items]``, computed by a thread pool
    with one thread per core (shared by the whole process)."""
    global _pool
    items = list(items)
    if len(items) < 2:
        return [function(item) for item in items]
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=os.cpu_count() or 2,
                thread_name_prefix='starcompactor-encode')
    return list(_pool.map(function, items))


def prefetched(items, depth):
    """Iterate ``items`` in a thread, ``depth`` items ahead of the caller;
    an exception in the thread is raised in the caller, in order."""
    handoff = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item):
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return
            except queue.Full:
                pass

    def produce():
        try:
            for item in items:
                put((item, None))
                if stop.is_set():
                    return
            put((done, None))
        except BaseException as e:   # handed over, raised by the caller
            put((done, e))

    thread = threading.Thread(target=produce, daemon=True,
                              name='starcompactor-prefetch')
    thread.start()
    try:
        while True:
            item, error = handoff.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join()
