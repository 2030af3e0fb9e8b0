"""How a `dkms-node` process answers signals.

SIGINT and SIGTERM stop it cleanly. SIGHUP re-reads `log_level` from the config file the node
was started with (`--config`) and applies it at once, saying so in one line; a node started
without a config file says it ignores SIGHUP. A config file that no longer reads leaves the
level as it was, with a WARNING naming what is wrong. (Before, SIGHUP's default action ended
the process without a line.) SIGUSR1 writes what every task waits on to a file in the data
directory and logs its path (`taskdump.py`): for a node that has stopped answering.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import trio

from dkms.node.config import ConfigError, file_log_level
from dkms.node.p2p.logs import LEVELS, set_log_level
from dkms.node.taskdump import dump_tasks

log = logging.getLogger("dkms.node")


async def handle_signals(
    stop: trio.CancelScope, config_file: Path | None, level: str, data_dir: Path
) -> None:
    """Until SIGINT or SIGTERM cancels `stop`: answer SIGHUP and SIGUSR1. `level` is the level
    in force."""
    wanted = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)
    with trio.open_signal_receiver(*wanted) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                level = reload_log_level(config_file, level)
                continue
            if signum == signal.SIGUSR1:
                try:
                    log.warning(
                        "SIGUSR1: every task and what it waits on in %s", dump_tasks(data_dir)
                    )
                except OSError as err:
                    log.warning("SIGUSR1: cannot write the task dump: %s", err.strerror)
                continue
            log.info("%s: shutting down", signal.Signals(signum).name)
            stop.cancel()
            return


def reload_log_level(config_file: Path | None, level: str) -> str:
    """Apply the config file's `log_level`; return the level now in force."""
    if config_file is None:
        log.info("SIGHUP ignored: started without --config, there is no log_level to re-read")
        return level
    try:
        new = file_log_level(config_file)
    except ConfigError as err:
        log.warning("SIGHUP: %s; the log level stays %s", err, level)
        return level
    if new is None:
        log.info("SIGHUP: %s sets no log_level; the log level stays %s", config_file, level)
        return level
    line = "SIGHUP: log level %s -> %s (from %s)"
    # Said under the more verbose of the two levels, so it shows if either shows INFO.
    if LEVELS[new] <= LEVELS[level]:
        set_log_level(new)
        log.info(line, level, new, config_file)
    else:
        log.info(line, level, new, config_file)
        set_log_level(new)
    return new
