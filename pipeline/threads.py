"""Threads where they pay: waiting on a server, and C code that drops the GIL.

Beam runs a DoFn in one thread; these helpers let it use the machine's other
cores for the work that does not hold the GIL (MariaDB's replies, Arrow's CSV
writer, zlib).
"""
import collections
import concurrent.futures
import os
import queue
import threading

_pool = None
_pool_lock = threading.Lock()


def _executor():
    """A thread pool with one thread per core, shared by the process."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=os.cpu_count() or 2,
                thread_name_prefix='starcompactor-encode')
    return _pool


def ordered_map(function, items):
    """``[function(item) for item in items]``, computed on every core."""
    items = list(items)
    if len(items) < 2:
        return [function(item) for item in items]
    return list(_executor().map(function, items))


class OrderedWrites:
    """Encodes in the background, writes in order.

    ``submit(encode, item)`` returns at once, so the caller goes on (with
    the next batch) while the pool encodes; results reach ``write`` in the
    order submitted, from the caller's thread, as they are ready.
    ``drain()`` waits for the rest. At most ``2 x cores`` encodings are in
    flight, which bounds the memory they hold.
    """

    def __init__(self, write):
        self.write = write
        self.max_pending = 2 * (os.cpu_count() or 2)
        self._pending = collections.deque()

    def submit(self, encode, item):
        self._pending.append(_executor().submit(encode, item))
        while self._pending and (self._pending[0].done() or
                                 len(self._pending) > self.max_pending):
            self.write(self._pending.popleft().result())

    def drain(self):
        while self._pending:
            self.write(self._pending.popleft().result())


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
