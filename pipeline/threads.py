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

def _settle(future, function, *args):
    """``future`` gets ``function(*args)``, or what it raised."""
    try:
        future.set_result(function(*args))
    except BaseException as e:   # handed to whoever waits
        future.set_exception(e)


class _DaemonPool:
    """A fixed set of daemon threads running submitted calls.

    Not ``concurrent.futures.ThreadPoolExecutor``: its threads are joined
    at interpreter exit, and a Ctrl-C that lands while it starts a thread
    can leave one that is never told to stop, so the process would hang on
    its way out after an interrupt.
    """

    def __init__(self, size):
        self._tasks = queue.SimpleQueue()
        for n in range(size):
            threading.Thread(target=self._work, daemon=True,
                             name=f'starcompactor-encode-{n}').start()

    def _work(self):
        while True:
            future, function, args = self._tasks.get()
            if future.set_running_or_notify_cancel():
                _settle(future, function, *args)

    def submit(self, function, *args):
        future = concurrent.futures.Future()
        self._tasks.put((future, function, args))
        return future

    def map(self, function, items):
        futures = [self.submit(function, item) for item in items]
        return (future.result() for future in futures)


_pool = None
_pool_lock = threading.Lock()


def _executor():
    """The pool: one thread per core, shared by the process."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = _DaemonPool(os.cpu_count() or 2)
    return _pool


def in_background(function, *args, **kwargs):
    """``function(*args, **kwargs)`` on the pool; returns its Future."""
    return _executor().submit(lambda: function(*args, **kwargs))


def in_own_thread(function):
    """``function()`` in a daemon thread of its own, as a Future: for a
    call that may never return (a runner's job), which then keeps neither
    the caller, nor the pool, nor the exit waiting."""
    future = concurrent.futures.Future()
    name = getattr(function, '__name__', 'call')
    threading.Thread(target=_settle, args=(future, function), daemon=True,
                     name=f'starcompactor-{name}').start()
    return future


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
