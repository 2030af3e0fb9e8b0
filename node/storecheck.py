"""What a node proves of its store before its role may receipt anything.

Theory of operation. `open_proven(data_dir, node)` opens the store of the node whose prefix
is `node` and returns it with the mark its replay must pass (`Store.pages(expect=...)`) and
the history record (`runtime/history.py`) that the store's commits will advance. Refused,
each with one line saying what happened and what to do:

    node.history of another node            node.seed replaced
    no store, or an empty file, for a key   deleted or truncated: started empty, the witness
      whose history holds events            would receipt other versions of what it did
    a store SQLite finds damaged            `integrity_check` (every page, every index)
    another node's store                    `Store.bind_node`
    a store other than the one recorded     an old copy, or another node's: not provably whole
    (during the replay) a row that breaks   bit rot, lost or changed rows, a deleted WAL file
      the hash chain, a chain that does       (the store is behind what the node had
      not pass the recorded mark              stored), see `Store.pages`
    (during the replay) an event the role   `daemon._restore`: replay is strict
      does not accept again

A store without a record (first start, or made before records existed) is adopted: its own
consistency is still checked, and the record is written from it. The way back from a refusal
is `dkms-node recover` (rebuild from co-witnesses, `recovery.py`) or `dkms-node restore`
(a backup no older than the record).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from dkms.node.runtime import history
from dkms.node.runtime.history import History, HistoryError
from dkms.node.runtime.store import FILENAME, Mark, Store, StoreError, StoreInUse

WAY_BACK: Final = (
    "rebuild it from co-witnesses with `dkms-node recover --data-dir {dir} --from"
    " PREFIX@MULTIADDR...`, or put back a backup with `dkms-node restore --data-dir {dir}"
    " --from FILE`"
)


class StoreRefused(Exception):
    """The node must not start on this store; the message says why and what to do."""


def way_back(data_dir: Path) -> str:
    return WAY_BACK.format(dir=data_dir)


def refused(data_dir: Path, why: str) -> StoreRefused:
    """`why` (a sentence without its end), the danger, and the way back, on one line."""
    return StoreRefused(
        f"{why}; this node has receipted events before, and on this store it could receipt"
        f" other versions of them: {way_back(data_dir)}"
    )


def open_proven(data_dir: Path, node: str) -> tuple[Store, Mark | None, History]:
    """The store, the mark its replay must pass (None: nothing to prove), and the record."""
    try:
        record = history.read(data_dir)
    except HistoryError as err:
        raise StoreRefused(f"{err}; {way_back(data_dir)}") from None
    if record is not None and record.node != node:
        raise StoreRefused(
            f"{data_dir / history.HISTORY_FILE} is the history of node {record.node}, not of"
            f" {node} (the key in node.seed): put the node's own seed back"
        )
    path = data_dir / FILENAME
    held = record is not None and record.mark.events > 0
    if held and record is not None:
        events = record.mark.events
        if not path.exists():
            raise refused(data_dir, f"the store {path} is missing (it held {events} events)")
        if path.stat().st_size == 0:
            raise refused(data_dir, f"the store {path} is empty (it held {events} events)")
    try:
        store = Store.open(path)
    except StoreError as err:
        raise _refused_if(held, data_dir, err) from None
    try:
        store.bind_node(node)
    except StoreError as err:
        store.close()
        raise StoreRefused(str(err)) from None
    try:
        store.check()
        mark = store.mark()
        expect: Mark | None = None
        if record is None or (record.mark.events == 0 and record.mark.store != mark.store):
            keeper = History.write(data_dir, node, mark)  # adopt it (nothing to compare with)
        else:
            if record.mark.store != mark.store:
                raise refused(
                    data_dir,
                    f"{path} is not the store this node last ran on (store {mark.store}; the"
                    f" node's history names store {record.mark.store}, which held"
                    f" {record.mark.events} events)",
                )
            expect = record.mark
            keeper = History.open(data_dir, record)
    except StoreError as err:
        store.close()
        raise _refused_if(held, data_dir, err) from None
    except (HistoryError, StoreRefused) as err:
        store.close()
        raise StoreRefused(str(err)) from None
    return store, expect, keeper


def _refused_if(held: bool, data_dir: Path, err: StoreError) -> StoreRefused:
    """A damaged store of a node with history comes with the danger and the way back; one in
    use by another process (a node already running there) only says so."""
    damaged = held and not isinstance(err, StoreInUse)
    return refused(data_dir, str(err)) if damaged else StoreRefused(str(err))
