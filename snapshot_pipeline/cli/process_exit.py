"""Leaving the process once a command is done, without the interpreter's teardown.

Measured on a ``snapshot`` command (issue 20, the command's cost beyond its run): after the last atexit
handler, CPython spent 0.67 s tearing down the modules and objects Dagster, pyarrow and the rest had
loaded (0.31 s after only importing the definitions). Nothing of ours needs that teardown: stdout and
stderr are flushed and every atexit handler (logging's flush, temporary directories, multiprocessing)
has run by then. A command that leaves a non-daemon thread running exits the normal way, which waits
for it.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    """Exit with ``code``: run the atexit handlers, flush stdout and stderr, and end the process."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()  # CPython's own exit path (Python 3.11+), run by hand before os._exit
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`) or a closed stream: nothing more to write
            pass
    os._exit(code)
