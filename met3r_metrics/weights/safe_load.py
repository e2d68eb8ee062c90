"""Reading torch checkpoints without running code from them, with PyTorch's own weights-only unpickler.

:func:`safe_torch_load` first calls ``torch.load(weights_only=True)`` inside
``torch.serialization.safe_globals(...)``. When torch refuses the file, it is read once more by torch's
weights-only ``Unpickler`` (``torch._weights_only_unpickler``) with two changes, made in
:func:`_restricted_pickle_module`:

* before a pickle is unpickled, its globals are listed by torch's scanner (``get_globals_in_pkl``, which
  only reads opcodes); each one outside the allow-list (:func:`restricted_allow_list`) is registered, for
  that load only, as an inert :class:`PickleStub` subclass (``safe_globals([(stub, "module.name")])``), or,
  without ``stub_unknown``, the file is refused there, naming those globals;
* a stub may take dict items (torch allows ``SETITEMS`` on plain dicts only), since Lightning's
  ``AttributeDict`` hyper-parameters are a dict subclass.

With ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` set, ``torch.load`` refuses any explicit ``pickle_module``; the second read
then hands the same unpickler to torch's own readers (:func:`_load_with_module`).

Everything else is torch's: only allow-listed callables are ever called, ``BUILD`` only on tensors,
parameters, ``OrderedDict`` and allow-listed types, appends only to lists, ``sys``/``os``/``posix``/``nt``
globals always refused. Pickle code (``__reduce__`` callables, ``__setstate__``, module top-level code)
of the file never runs: no module named in the file is imported.
"""

from __future__ import annotations

import argparse
import os
import pickle
import threading
import types
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch._weights_only_unpickler as _torch_unpickler

__all__ = [
    "CheckpointStubWarning",
    "PickleStub",
    "UnsafeCheckpointError",
    "read_checkpoint_tensors",
    "restricted_allow_list",
    "safe_torch_load",
]

# torch.serialization.safe_globals edits one process-wide set: our reads take turns, so one read leaving
# its context never removes what another one still needs.
_LOCK = threading.RLock()

#: Plain builtin types allowed on top of torch's list in the second read (calling them runs no foreign code).
_BUILTIN_TYPES = (frozenset, slice, range, bytes, str, int, float, bool, tuple, list, dict)


class CheckpointStubWarning(UserWarning):
    """Some pickled objects of a checkpoint were replaced by inert stubs (see :func:`safe_torch_load`)."""


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint was refused: reading it would need classes or functions outside the allow-list."""


class PickleStub:
    """Inert stand-in for a pickled class or function outside the allow-list.

    Accepts any constructor arguments, state and dict items and only stores them (``stub_args``,
    ``stub_state``, ``stub_items``) for inspection; it has no other behaviour. ``stub_of`` is the
    ``module.name`` it replaces.
    """

    stub_of = "?"
    _stub_log: dict[str, None] | None = None  # per load: stubbed names in the order they were first called

    def __new__(cls, *args: Any, **kwargs: Any) -> PickleStub:
        if cls._stub_log is not None:
            cls._stub_log.setdefault(cls.stub_of, None)
        obj = object.__new__(cls)
        obj.__dict__.update(stub_args=args, stub_state=None, stub_items={})
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["stub_state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__["stub_items"][key] = value

    def __repr__(self) -> str:
        return f"<PickleStub of {self.stub_of}>"


def _global_name(obj: Any) -> tuple[str, Any]:
    if isinstance(obj, tuple):  # (object, "module.name") as torch.serialization.add_safe_globals accepts
        return obj[1], obj[0]
    return f"{obj.__module__}.{obj.__qualname__}", obj


def restricted_allow_list(safe_globals: Iterable[Any] = ()) -> dict[str, Any]:
    """``"module.name" -> object`` that a second read resolves to the real object (everything else is a stub).

    torch's own ``weights_only`` allow-list (tensor / parameter rebuild functions, ``_rebuild_from_type_v2``,
    dtypes, storage and tensor classes, ``torch.Size``, ``torch.device``, layouts, qschemes,
    ``collections.OrderedDict`` / ``Counter``, ``builtins.set`` / ``complex`` / ``bytearray``,
    ``_codecs.encode``), globals registered with ``torch.serialization.add_safe_globals``, ``safe_globals``,
    ``argparse.Namespace`` and the plain builtin types ``frozenset, slice, range, bytes, str, int, float, bool,
    tuple, list, dict``. Nothing else: in particular no ``builtins.eval`` / ``exec`` / ``getattr`` /
    ``__import__``, no ``os``, ``subprocess``, ``copyreg``, ``functools``, ``numpy``.
    """
    allowed = dict(_torch_unpickler._get_allowed_globals())
    extra = [*torch.serialization.get_safe_globals(), argparse.Namespace, *_BUILTIN_TYPES, *safe_globals]
    allowed.update(_global_name(obj) for obj in extra)
    return allowed


def _restricted_pickle_module(
    allowed: Mapping[str, Any], stubbed: dict[str, None], *, stub_unknown: bool = True,
) -> types.ModuleType:
    """A module (``Unpickler`` + ``load``) for ``torch.load(pickle_module=...)``: torch's weights-only
    unpickler with ``allowed`` (name -> object) allow-listed and every other global of the pickle an inert
    :class:`PickleStub` (recorded in ``stubbed``), or refused (``stub_unknown=False``)."""
    torch_allowed = _torch_unpickler._get_allowed_globals()
    extra = [(obj, name) for name, obj in allowed.items() if name not in torch_allowed]
    stubs: dict[str, type[PickleStub]] = {}

    class Unpickler(_torch_unpickler.Unpickler):
        def __init__(self, file: Any, *, encoding: str = "bytes") -> None:
            super().__init__(file, encoding=encoding)
            self._file = file

        def load(self) -> Any:
            start = self._file.tell()
            unknown = sorted(n for n in _torch_unpickler.get_globals_in_pkl(self._file) if n not in allowed)
            self._file.seek(start)
            if unknown and not stub_unknown:
                raise UnsafeCheckpointError(", ".join(unknown))
            for name in unknown:
                stubs.setdefault(name, type(f"PickleStub[{name}]", (PickleStub,), {"stub_of": name, "_stub_log": stubbed}))
            try:
                with torch.serialization.safe_globals(extra + [(stubs[n], n) for n in unknown]):
                    return super().load()
            except pickle.UnpicklingError as err:
                if str(err).startswith("Can only build"):  # torch's BUILD refusal: say what it refused
                    target = type(self.stack[-1]).__qualname__
                    raise pickle.UnpicklingError(f"refusing to set the state of a {target} object") from err
                raise
            finally:
                stubbed.update(dict.fromkeys(unknown))  # after the ones called, in call order

        def _check_set_item_target(self, opcode: str) -> None:
            if not isinstance(self.stack[-1], PickleStub):
                super()._check_set_item_target(opcode)

    def load(file: Any, *, encoding: str = "bytes") -> Any:
        return Unpickler(file, encoding=encoding).load()

    module = types.ModuleType("met3r_restricted_pickle")
    module.Unpickler = Unpickler  # type: ignore[attr-defined]
    module.load = load  # type: ignore[attr-defined]
    module.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]
    return module


def safe_torch_load(
    path: str | os.PathLike, safe_globals: Iterable[Any] = (), *, stub_unknown: bool = False,
    argument: str = "path",
) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU with extra allow-listed globals (memory-mapped for zip files).

    Never falls back to full unpickling. When torch refuses the file:

    * ``stub_unknown=False``: :class:`UnsafeCheckpointError` (an ``UnpicklingError``) naming ``argument``,
      the file and the globals it would need;
    * ``stub_unknown=True``: the file is read again by torch's unpickler with the wider
      :func:`restricted_allow_list` and every other global replaced by an inert :class:`PickleStub` (its
      module is never imported, its code never runs); a :class:`CheckpointStubWarning` names them.
    """
    safe_globals = list(safe_globals)
    mmap = zipfile.is_zipfile(path)  # legacy (non-zip) files cannot be memory-mapped
    if mmap and any(n.rpartition("/")[2] == "constants.pkl" for n in zipfile.ZipFile(path).namelist()):
        raise UnsafeCheckpointError(  # torch.load would hand it to torch.jit.load
            f"{argument}: expected a checkpoint written by torch.save, received {os.fspath(path)}, a TorchScript "
            "archive (a program, not weights); refused"
        )
    try:
        with _LOCK, torch.serialization.safe_globals(safe_globals):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        pass  # torch's message suggests weights_only=False: replaced by ours below
    if stub_unknown:
        allowed = restricted_allow_list(safe_globals)
    else:  # what the first read allowed
        registered = [*torch.serialization.get_safe_globals(), *safe_globals]
        allowed = {**_torch_unpickler._get_allowed_globals(), **dict(map(_global_name, registered))}
    stubbed: dict[str, None] = {}
    module = _restricted_pickle_module(allowed, stubbed, stub_unknown=stub_unknown)
    try:
        with _LOCK:
            result = _load_with_module(path, module, mmap)
    except UnsafeCheckpointError as err:
        kinds = ", ".join(["tensors", *(_global_name(g)[0] for g in safe_globals)])
        raise UnsafeCheckpointError(
            f"{argument}: expected a checkpoint that pickles only {kinds}, received {os.fspath(path)}, whose pickle "
            f"also needs {err}; refused without importing or running anything from it"
        ) from None
    except Exception as err:
        names = f"; classes replaced by inert stubs: {', '.join(stubbed)}" if stubbed else ""
        raise UnsafeCheckpointError(
            f"{argument}: expected a checkpoint whose tensors need no foreign class, received {os.fspath(path)}: "
            f"the restricted unpickler could not read it ({type(err).__name__}: {_first_line(err)}){names}; "
            "nothing from the file was imported or run"
        ) from err
    if stubbed:
        warnings.warn(
            f"{os.fspath(path)}: torch.load(weights_only=True) refused this checkpoint; it was read again with these "
            f"non-tensor objects replaced by inert stubs (never imported nor run): {', '.join(stubbed)}",
            CheckpointStubWarning,
            stacklevel=2,
        )
    return result


#: torch.load's switch (torch >= 2.4) that forces weights_only=True and so refuses any explicit pickle_module.
FORCE_WEIGHTS_ONLY_ENV = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"


def _weights_only_forced() -> bool:
    return os.getenv(FORCE_WEIGHTS_ONLY_ENV, "0").lower() in ("1", "y", "yes", "true")  # torch.load's test


def _load_with_module(path: str | os.PathLike, module: types.ModuleType, mmap: bool) -> Any:
    """The second read: torch's storage rebuilding with ``module`` (torch's weights-only unpickler + stubs).

    ``torch.load(weights_only=False, pickle_module=module)`` is what lets torch take the module; ``weights_only=False``
    is harmless here because the module *is* a weights-only unpickler. With ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` set,
    torch.load refuses every explicit pickle_module, so the file goes straight to the readers torch.load itself
    calls after that check (``torch.serialization._load`` for zip archives, ``_legacy_load`` otherwise), read into
    memory: the variable's guarantee (nothing in the file can run code) holds, since only this restricted
    unpickler reads it. A torch without those readers refuses in one line naming the variable.
    """
    if not _weights_only_forced():
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=module, mmap=mmap)
    ser = torch.serialization
    readers = [getattr(ser, n, None) for n in ("_load", "_legacy_load", "_open_zipfile_reader")]
    if not all(callable(r) for r in readers):  # pragma: no cover - every torch since 1.6 has them
        raise UnsafeCheckpointError(
            f"{FORCE_WEIGHTS_ONLY_ENV}: expected unset to read {os.fspath(path)} (a checkpoint beyond torch's "
            f"weights-only allow-list), got {os.environ[FORCE_WEIGHTS_ONLY_ENV]!r}"
        )
    load_zip, load_legacy, open_zip = readers
    with open(path, "rb") as fh:
        if zipfile.is_zipfile(fh):
            fh.seek(0)
            with open_zip(fh) as archive:
                return load_zip(archive, "cpu", module, encoding="utf-8")
        fh.seek(0)
        return load_legacy(fh, "cpu", module, encoding="utf-8")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def read_checkpoint_tensors(
    path: str | os.PathLike, key: str | None = "state_dict", safe_globals: Iterable[Any] = (), *,
    argument: str = "path",
) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint, read safely (:func:`safe_torch_load` with ``stub_unknown=True``).

    ``ckpt[key]`` when the file holds a dict with that entry (Lightning's ``state_dict``), else the top-level
    dict. Non-tensor values of that dict are dropped (they are not weights). Fails with ``UnpicklingError``
    when the tensor dict itself, one of its values, or an attribute of one of its tensors is an object of a
    class outside the allow-list: weights never depend on a stub.
    """
    ckpt = safe_torch_load(path, safe_globals, stub_unknown=True, argument=argument)
    container = ckpt
    where = "the checkpoint"
    if key is not None and isinstance(ckpt, Mapping) and key in ckpt:
        container, where = ckpt[key], f"entry {key!r}"
    prefix = f"{argument}: {os.fspath(path)}:"
    if isinstance(container, PickleStub):
        raise UnsafeCheckpointError(
            f"{prefix} {where} is a pickled {container.stub_of} object (not allow-listed), not a dict of tensors"
        )
    if not isinstance(container, Mapping):
        raise UnsafeCheckpointError(f"{prefix} {where} is a {type(container).__name__}, not a dict of tensors")
    out: dict[str, torch.Tensor] = {}
    for name, value in container.items():
        bad = _stub_in(value)
        if bad is not None:
            raise UnsafeCheckpointError(
                f"{prefix} tensor entry {name!r} of {where} needs the non-allow-listed global {bad.stub_of!r}; "
                "refusing to load weights that depend on it"
            )
        if isinstance(value, torch.Tensor):
            out[str(name)] = value
    return out


def _stub_in(value: Any) -> PickleStub | type[PickleStub] | None:
    """A stub that ``value`` is or (for a tensor) carries as an attribute, else None."""
    if isinstance(value, PickleStub) or (isinstance(value, type) and issubclass(value, PickleStub)):
        return value
    if isinstance(value, torch.Tensor):
        for attr in getattr(value, "__dict__", {}).values():
            found = _stub_in(attr)
            if found is not None:
                return found
    return None
