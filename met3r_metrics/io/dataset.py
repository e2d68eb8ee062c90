"""Reading sequences in DataLoader workers, in order: :class:`SequenceDataset`, :func:`iter_prepared`, and
:class:`SequenceError` for a sequence that could not be read."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .prepare import prepare_views
from .sources import SequenceSource


@dataclass(frozen=True)
class SequenceError:
    """A sequence that could not be read: recorded instead of its views (picklable)."""

    sequence: str
    error_type: str
    message: str

    def __str__(self) -> str:
        return f"{self.error_type}: {self.message}"


class SequenceDataset(torch.utils.data.Dataset):
    """Items ``(index, PreparedViews | SequenceError)`` over ``sources``, for a ``DataLoader``.

    ``prepare_fn(source)`` (default :func:`prepare_views`; a ``functools.partial`` of it carries
    the settings) runs in the worker; any exception it raises becomes that item's
    :class:`SequenceError` instead of ending the loader.
    """

    def __init__(self, sources: Sequence[SequenceSource], prepare_fn: Callable[[SequenceSource], Any] = prepare_views) -> None:
        self.sources = list(sources)
        self.prepare_fn = prepare_fn

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        source = self.sources[index]
        try:
            return index, self.prepare_fn(source)
        except Exception as err:  # noqa: BLE001 - one bad input must not end the run
            return index, SequenceError(source.name, type(err).__name__, str(err))


def _keep(item: Any) -> Any:
    return item


def iter_prepared(
    sources: Sequence[SequenceSource],
    prepare_fn: Callable[[SequenceSource], Any] = prepare_views,
    *,
    num_workers: int = 0,
    prefetch_factor: int = 2,
    timeout: float = 0,
) -> Iterator[tuple[SequenceSource, Any]]:
    """``(source, PreparedViews | SequenceError)`` for each source, in the order of ``sources``.

    ``num_workers > 0`` decodes in that many DataLoader worker processes, up to
    ``num_workers * prefetch_factor`` sequences ahead, while the caller scores; the order is kept.
    A worker process that dies (e.g. killed for memory) ends the iteration with the
    DataLoader's ``RuntimeError``.
    """
    from torch.utils.data import DataLoader

    dataset = SequenceDataset(sources, prepare_fn)
    if num_workers == 0:
        for i in range(len(dataset)):
            yield dataset.sources[i], dataset[i][1]
        return
    # Workers start from a fresh forkserver process, not a fork of this one: a forked worker inherits
    # PyAV (FFmpeg) objects whose libswscale slice threads do not survive the fork, and freeing one
    # there blocks the worker forever (seen in the test suite: a worker stuck in sws_freeContext).
    import multiprocessing

    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    loader = DataLoader(
        dataset, batch_size=None, shuffle=False, num_workers=num_workers, collate_fn=_keep,
        prefetch_factor=prefetch_factor, timeout=timeout, multiprocessing_context=method,
    )
    for expected, (index, result) in enumerate(loader):
        assert index == expected, f"DataLoader returned item {index}, expected {expected}"
        yield dataset.sources[index], result
