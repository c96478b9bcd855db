"""The process's stop signals: SIGINT and SIGTERM become requests that a training loop answers after its step."""
import contextlib
import signal

_requests = None  # those of the stop_requests in effect: signal handlers belong to the whole process


@contextlib.contextmanager
def stop_requests():
    """Turn SIGINT and SIGTERM into a request that the loop answers after its current step (a request made before
    the loop began, at its first step); a second SIGINT interrupts at once. Nested, the outermost's requests."""
    global _requests
    if _requests is not None:
        yield _requests
        return
    requests = []

    def request(signum, frame):
        requests.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = {signum: signal.signal(signum, request) for signum in (signal.SIGINT, signal.SIGTERM)}
    _requests = requests
    # A sweep's worker starts its training process with both blocked, so that none is lost while Python starts.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGINT, signal.SIGTERM))
    try:
        yield requests
    finally:
        _requests = None
        for signum, handler in previous.items():
            signal.signal(signum, handler)
