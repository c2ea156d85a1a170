"""The command line's last line of defence: every exception becomes a short message.

A user's mistake (a :class:`~common.errors.FedsynthError`) and trouble with the machine or its
files (a full disk, a permission, memory, a file cut short or not text) say what to do and exit
with :data:`USER_ERROR_EXIT`. Anything else is a fedsynth bug (or a library's failure fedsynth
did not foresee): a short message says where the traceback was written and where to report
it, and the command exits with :data:`BUG_EXIT`. Neither prints a traceback or "Aborted.".
"""

from __future__ import annotations

import errno
import time
import traceback
from pathlib import Path

from common.errors import FedsynthError

USER_ERROR_EXIT = 2
BUG_EXIT = 3
INTERRUPTED_EXIT = 130
"""What a shell reports for a command stopped by Ctrl-C (128 + SIGINT)."""
CRASH_LOG_DIR = Path("~/.fedsynth/logs")
"""Where the traceback of an unexpected failure is written."""
REPORT_TO = "the fedsynth maintainers (the project's issue tracker)"


def _path_of(err: OSError) -> str:
    return f" ({err.filename})" if err.filename else ""


def environment_message(err: BaseException) -> str | None:
    """What to tell the user about trouble with the machine or its input, or None."""
    if isinstance(err, FedsynthError):
        return str(err)
    if isinstance(err, MemoryError):
        return (
            "out of memory; lower training.batch-size or data.target-shape, or close other "
            "programs (set training.memory-limit-gib to be warned before a run starts)"
        )
    if isinstance(err, UnicodeDecodeError):
        return f"a file given is not UTF-8 text ({err.reason} at byte {err.start}); check it"
    if isinstance(err, EOFError):
        return f"a file or input ended early, it may be truncated ({err}); copy it again"
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return f"the disk is full{_path_of(err)}: free some space and run the command again"
    if isinstance(err, PermissionError):
        return f"permission denied{_path_of(err)}: check the file's owner and mode"
    if isinstance(err, OSError):
        return f"{err.strerror or err}{_path_of(err)}"
    return None


def write_crash_log(err: BaseException, folder: Path | None = None) -> Path | None:
    """Write ``err``'s traceback to a new file in ``folder`` (default :data:`CRASH_LOG_DIR`);
    its path, or None when even that cannot be written."""
    folder = (folder or CRASH_LOG_DIR).expanduser()
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{id(err):x}.log"
        path.write_text(text, encoding="utf-8")
    except OSError:
        return None
    return path


def bug_message(err: BaseException, log: Path | None) -> str:
    """The short message of an unexpected failure."""
    where = f"the traceback is in {log}" if log else "the traceback could not be written"
    return (
        f"fedsynth failed unexpectedly ({type(err).__name__}: {str(err)[:200]}); {where}: "
        f"please report it to {REPORT_TO} with that file"
    )
