"""`dkms-node backup` and `restore`: a copy of a node's store, and putting one back safely.

A backup is an SQLite online backup (`store.backup`): a consistent single-file copy taken
while the node runs, mode 0600, checked whole before it is reported.

Restoring is where a witness could be made to receipt twice: a backup is older than the
store it replaces, and the events receipted since it was taken are not in it. Started on
it, the witness would accept, and receipt, other versions of them. So `restore` compares the
backup with the node's history record (`runtime/history.py`): a backup that does not hold
everything the record says the node stored (another store id, fewer events, or a chain that
does not pass the recorded mark) is refused unless `accept_older`, which warns. Otherwise the
backup replaces the store (the one it replaces is moved aside, never deleted) and the record
is rewritten to the backup's mark. The node must be stopped: `restore` takes the store's lock.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dkms.node import storefiles
from dkms.node.runtime import history
from dkms.node.runtime.history import History, HistoryError
from dkms.node.runtime.store import FILENAME, Mark, Store, StoreError, backup
from dkms.node.storefiles import StoreFilesError


class BackupError(Exception):
    """A backup cannot be made or restored; the message says why and what to do."""


def back_up(data_dir: Path, target: Path) -> Mark:
    """Copy the store of the node in `data_dir` to the new file `target` (node running or not)."""
    try:
        return backup(data_dir / FILENAME, target)
    except StoreError as err:
        raise BackupError(str(err)) from None


def restore(
    data_dir: Path,
    source: Path,
    *,
    accept_older: bool = False,
    warn: Callable[[str], None] = print,
) -> Mark:
    """Put the backup `source` in place of the store in `data_dir` (node stopped)."""
    try:
        node = storefiles.node_of(data_dir)
        with storefiles.stopped(data_dir):
            built = storefiles.temporary(data_dir, "restoring")
            try:
                mark = _checked_copy(source, built, node)
                older = _older(data_dir, built)
                if older is not None:
                    if not accept_older:
                        raise BackupError(
                            f"{source} {older}: started on it, a witness could receipt other"
                            " versions of the events it lacks. Rebuild from co-witnesses"
                            f" instead (`dkms-node recover --data-dir {data_dir} --from"
                            " PREFIX@MULTIADDR...`), or add --accept-older to restore it anyway"
                        )
                    warn(
                        f"warning: {source} {older}. Restoring it anyway (--accept-older): if"
                        " this node is a witness, it will accept and receipt again any version"
                        " of the events the backup lacks, and if the controllers or the"
                        " network hand it another version of one it receipted, it will have"
                        " receipted two versions of one event (duplicity, provable against"
                        " its key). `dkms-node recover` avoids that."
                    )
                aside = storefiles.move_aside(data_dir, "replaced")
                if aside is not None:
                    warn(f"the store it replaces is kept in {aside}")
                History.write(data_dir, node, mark)
                storefiles.install(built, data_dir)
            finally:
                storefiles.temporary(data_dir, "restoring")  # whatever is left of the copy
    except (StoreFilesError, StoreError, HistoryError) as err:
        raise BackupError(str(err)) from None
    return mark


def _checked_copy(source: Path, built: Path, node: str) -> Mark:
    """Copy `source` to `built` (checked whole by `backup`) and check whose it is."""
    if not source.is_file():
        raise BackupError(f"no backup at {source}")
    mark = backup(source, built)
    with Store.inspect(built) as copy:
        owner = copy.get_meta("node")
    if owner is not None and owner.decode(errors="replace") != node:
        raise BackupError(
            f"{source} is a backup of node {owner.decode(errors='replace')}, not of {node}"
            " (the key in this data directory's node.seed)"
        )
    return mark


def _older(data_dir: Path, built: Path) -> str | None:
    """Why the copy at `built` is older than what the node recorded (None if it is not)."""
    try:
        record = history.read(data_dir)
    except HistoryError as err:
        return f"cannot be compared with this node's history ({err})"
    if record is None or record.mark.events == 0:
        return None
    with Store.inspect(built) as copy:
        held = copy.mark()
        try:
            copy.verify(expect=record.mark)
        except StoreError:
            pass
        else:
            return None
    if held.store != record.mark.store:
        return (
            f"is a copy of store {held.store}, not of the store this node last ran on"
            f" ({record.mark.store}, which held {record.mark.events} events)"
        )
    return (
        f"is older than this node's store: it holds {held.events} events, the node had stored"
        f" {record.mark.events}"
    )
