"""What `audit verify` runs its chunks with, and how the parent joins their parts of the tree.

The chunk processes (``chunks.py``) return perfect subtrees (height, hash) and, for each kept
checkpoint that ends inside a chunk, that chunk's part of its tree; the parent appends the
subtrees to the frontier and completes each checkpoint's root here.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

from citizen_lookup.services.audit.chunks import _STATE, _init_worker
from citizen_lookup.services.audit.merkle import Frontier, node_hash


def append_subtree(frontier: Frontier, height: int, node: bytes) -> None:
    """Append a perfect subtree of 2**height leaves; the frontier's size must be aligned to it."""
    width = 1 << height
    if frontier.size % width:
        raise ValueError("misaligned subtree")
    units = frontier.size >> height
    while units & 1:
        node = node_hash(frontier.nodes.pop(), node)
        units >>= 1
    frontier.nodes.append(node)
    frontier.size += width


def with_nodes(frontier: Frontier, nodes: list[tuple[int, str]]) -> Frontier:
    result = frontier.copy()
    for height, node in nodes:
        append_subtree(result, height, bytes.fromhex(node))
    return result


def root_with(frontier: Frontier, part: Any) -> bytes:
    """The root of ``frontier`` followed by a chunk's part of a tree (see chunks.ChunkTask)."""
    if isinstance(part, list):
        return with_nodes(frontier, part).root()
    top, folded = part
    # Folding right to left gives the root whenever no node before is smaller than the part's
    # largest (an equal one is merged exactly as the fold combines it).
    if frontier.nodes and min(frontier.heights()) < top:
        raise ValueError("a folded part needs whole subtrees at least as large before it")
    node: bytes = folded
    for left in reversed(frontier.nodes):
        node = node_hash(left, node)
    return node


class Runner:
    """Runs tasks in a process pool, or in this process when there is little to do."""

    def __init__(
        self, url: str, key: bytes, vkey: str | None, parallel: bool, workers: int | None
    ) -> None:
        self.url, self.key = url, key
        self.workers = workers or os.cpu_count() or 1
        self.pool: ProcessPoolExecutor | None = None
        if parallel:
            self.pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=get_context("spawn"),
                initializer=_init_worker,
                initargs=(url, key, vkey, os.getpid()),
            )
        else:
            _init_worker(url, key, vkey)

    def map(self, func: Any, tasks: Iterable[Any]) -> Iterator[dict[str, Any]]:
        """Results in task order, with at most a few tasks ahead of the one being read, so a
        slow reader never holds every chunk's result at once (constant memory)."""
        if self.pool is None:
            return (func(task) for task in tasks)
        return self._windowed(func, iter(tasks))

    def _windowed(self, func: Any, tasks: Iterator[Any]) -> Iterator[dict[str, Any]]:
        assert self.pool is not None
        pending: deque[Any] = deque()
        for task in tasks:
            pending.append(self.pool.submit(func, task))
            if len(pending) >= 2 * self.workers:
                break
        while pending:
            result = pending.popleft().result()
            following = next(tasks, None)
            if following is not None:
                pending.append(self.pool.submit(func, following))
            yield result

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        else:
            reader = _STATE.pop("reader", None)
            if reader is not None:
                reader.engine.dispose()
