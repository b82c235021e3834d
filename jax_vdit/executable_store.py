"""A disk store of compiled XLA executables, so that a warm process skips tracing and lowering too.

Used for the VAE's decode/encode stages (:mod:`jax_vdit.vae.runtime`), the single-device sampler
(:func:`jax_vdit.sampling.sample`) and the weights' layout programs (:mod:`jax_vdit.io.device_layout`), each through
:func:`load_or_compile` (or :func:`held` where only a stored executable will do): one table of this process's
executables by store key, so a program is read or compiled once per process.

JAX's persistent compilation cache saves the XLA compile, but a fresh process still traces and lowers every
program to compute the cache key: for the VAE's 40 decode stages at 29x720p that was about 4 s of a warm `vdit
sample` on an H100, and it competes for Python's lock with the transformer's own lowering. This store keys an
executable by what determines it without tracing anything (the caller's description of the program, the source
of the package that builds it, the jax/jaxlib versions, the backend and device kind, ``XLA_FLAGS``) and keeps the
serialized executable (``jax.experimental.serialize_executable``) with its input/output tree structure.

It lives in ``<jax_compilation_cache_dir>/jax_vdit_executables`` and is used only while JAX's persistent cache is
on (``vdit sample`` turns it on by default; ``--no-compile-cache`` turns both off); set
``JAX_VDIT_EXECUTABLE_STORE=0`` to bypass it alone. Files are written atomically and carry a SHA-256 of their
contents; a file that is damaged, written by another format or cannot be loaded is ignored (with one warning) and
the program is compiled again. Like JAX's cache, the files are unpickled: keep the cache directory private.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pickle
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from jax_vdit.source_fingerprint import source_fingerprint
from jax_vdit.xla_defaults import keyed_xla_flags

SUBDIR = "jax_vdit_executables"
ENV_SWITCH = "JAX_VDIT_EXECUTABLE_STORE"
MAGIC = b"jax-vdit-executable-1\n"
_warned: set[str] = set()
_problems: list[str] = []  # every file ignored or not written in this process, why (see problems())


def problems() -> list[str]:
    """Each executable file this process ignored (damaged, unloadable) or could not write, with the reason."""
    return list(_problems)


def note_problem(text: str) -> None:
    """Add ``text`` (a file of the store that a caller ignored, and why) to :func:`problems`."""
    _problems.append(text)


@contextlib.contextmanager
def constants_embedded():
    """Programs lowered inside this context carry their closed-over constants (RoPE tables, the noise schedule,
    tile masks) inside them. Where JAX hoists constants into extra arguments instead
    (``jax_use_simplified_jaxpr_constants``), ``serialize_executable`` refuses the program ("serialize_executables
    with const_args") and the store could not keep it. JAX has no public context for the setting."""
    from jax._src import config as jax_config

    state = getattr(jax_config, "embedded_constants_max_bytes", None)
    if state is None:
        yield
        return
    with state(1 << 62):
        yield


def store_directory() -> Path | None:
    """The store's folder, or None when JAX's persistent compilation cache is off or the store is switched off."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    cache = jax.config.jax_compilation_cache_dir
    return Path(cache) / SUBDIR if cache else None


def environment_fingerprint() -> tuple:
    """What else an executable depends on: versions, backend, devices, the XLA flags (:func:`keyed_xla_flags`) and
    jax's numerics settings (default matmul precision, x64) of this process."""
    import jaxlib

    device = jax.local_devices()[0]
    return (jax.__version__, jaxlib.__version__, jax.default_backend(), device.client.platform_version,
            device.device_kind, jax.local_device_count(), keyed_xla_flags(),
            str(jax.config.jax_default_matmul_precision), bool(jax.config.jax_enable_x64))


def store_key(description: Any, *package_dirs: str) -> str:
    """A file name for the program ``description`` describes (a ``repr``-stable value: names, shapes, dtypes,
    graph definitions) when built by the code under ``package_dirs``."""
    text = repr((environment_fingerprint(), source_fingerprint(*package_dirs), description))
    return hashlib.sha256(text.encode()).hexdigest()


def _warn_once(what: str, path: Path, err: BaseException) -> None:
    _problems.append(f"{what} {path.name}: {type(err).__name__}: {err}")
    if what not in _warned:
        _warned.add(what)
        warnings.warn(f"executable store: {what} {path} ({type(err).__name__}: {err}); compiling instead",
                      RuntimeWarning, stacklevel=3)


def _file(directory: Path, key: str) -> Path:
    return directory / f"{key}.bin"


def load(key: str) -> tuple[Any, Any] | None:
    """(the loaded executable, the extra value saved with it) for ``key``, or None when absent or unusable."""
    directory = store_directory()
    if directory is None:
        return None
    path = _file(directory, key)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    runtimes: tuple[str, ...] = ()
    try:
        if not blob.startswith(MAGIC):
            raise ValueError("not a jax-vdit executable file of this format")
        body = blob[len(MAGIC):]
        checksum, body = body[:32], body[32:]
        if hashlib.sha256(body).digest() != checksum:
            raise ValueError("checksum mismatch (truncated or damaged)")
        payload, in_tree, out_tree, extra, *rest = pickle.loads(body)
        runtimes = tuple(rest[0]) if rest else ()  # files of programs without kernel runtimes have four parts
        for target in runtimes:
            _prepare_runtime(target)
        from jax.experimental.serialize_executable import deserialize_and_load

        return deserialize_and_load(payload, in_tree, out_tree), extra
    except Exception as err:  # noqa: BLE001 - a bad file costs a compile, never a wrong result
        _warn_once("ignored unusable file", path, err)
        path.unlink(missing_ok=True)  # removed, so that later processes do not read it again
        for target in runtimes:  # stop storing such programs here: each warm process would fail the same way
            _record_unloadable(target, err)
        return None


def save(key: str, compiled, extra: Any = None, runtimes: tuple[str, ...] = ()) -> bool:
    """Write ``compiled`` (a ``jax.stages.Compiled``) and ``extra`` under ``key``; False where the store is off or
    the executable cannot be serialized on this backend (the caller just compiles next time). ``runtimes``: the
    kernel custom-call targets (:data:`UNLOADABLE_CUSTOM_CALLS`) whose runtime :func:`load` must prepare first."""
    directory = store_directory()
    if directory is None:
        return False
    path = _file(directory, key)
    try:
        from jax.experimental.serialize_executable import serialize

        payload, in_tree, out_tree = serialize(compiled)
        parts = (payload, in_tree, out_tree, extra) + ((tuple(runtimes),) if runtimes else ())
        body = pickle.dumps(parts, protocol=pickle.HIGHEST_PROTOCOL)
        _write_atomically(path, MAGIC + hashlib.sha256(body).digest() + body)
        return True
    except Exception as err:  # noqa: BLE001 - the store is an optimisation
        _warn_once("could not write", path, err)
        return False


def compile_and_save(key: str, lowered, extra: Any = None):
    """``lowered.compile()``, saved under ``key`` (see :func:`save`) unless this backend cannot serialize it.

    On XLA:CPU an executable that JAX read from its persistent compilation cache serializes without its compiled
    functions: loaded in another process it fails when run (``NOT_FOUND: Function ... not found``). Such an
    executable is not saved there; the next process reads it from JAX's cache again (tracing and lowering it) and
    the store fills once XLA compiles the program itself. Other backends save either kind.

    A program that calls kernels a deserialized executable cannot find unprepared (:data:`UNLOADABLE_CUSTOM_CALLS`:
    Mosaic GPU) is saved only where :func:`stores_kernel_runtime` allows it, marked so that :func:`load` prepares
    their runtime first; else it is not saved and :func:`problems` says so."""
    from jax_vdit.compile_meter import CompileMeter

    unloadable = unloadable_custom_call(lowered)
    with CompileMeter() as meter:
        compiled = lowered.compile()
    if unloadable is not None and not stores_kernel_runtime(unloadable):  # JAX's persistent cache still serves it
        why = (f"${KERNEL_RUNTIME_ENV}=0" if _kernel_storing_switched_off() else
               "a stored one did not load here even with their runtime located first")
        _problems.append(f"not stored {key[:16]}: the program calls {unloadable} kernels, which an executable "
                         "deserialized in another process cannot find unless their runtime is located first "
                         f"('Failed to lookup host symbol' on an H100, jax 0.11.2); not stored because {why}")
    elif meter.cache_hits == 0 or not _reloads_lose_code():
        save(key, compiled, extra, runtimes=(unloadable,) if unloadable else ())
    return compiled


# ------------------------------------------------------------------------------------------------------------
# this process's executables: each stored program is read or compiled once per process


@dataclasses.dataclass(frozen=True)
class Held:
    """An executable this process holds under a store key, with the extra value saved beside it, and where it
    came from: ``"process"`` (already held), ``"store"`` (read from the store now: no tracing, lowering or
    compiling) or ``"compiled"`` (lowered and compiled now, then stored)."""

    executable: Any
    extra: Any
    source: str


_held: dict[str, tuple[Any, Any]] = {}  # store key -> (executable, extra)
_read_counts: dict[str, int] = {}  # kind -> executables read from the store in this process
_held_lock = threading.Lock()


def held(key: str, kind: str = "") -> Held | None:
    """This process's executable under ``key``, else the store's (read once, then kept for the process); None
    when neither has one. ``kind`` (e.g. ``"sampler"``) counts reads from the store for :func:`read_count`."""
    with _held_lock:
        entry = _held.get(key)
    if entry is not None:
        return Held(entry[0], entry[1], "process")
    found = load(key)
    if found is None:
        return None
    with _held_lock:
        entry = _held.setdefault(key, found)
        _read_counts[kind] = _read_counts.get(kind, 0) + 1
    return Held(entry[0], entry[1], "store")


def load_or_compile(key: str, lower: Callable[[], Any], extra: Any = None, kind: str = "") -> Held:
    """The executable under ``key`` (this process's, else the store's), or ``lower()`` compiled and saved with
    ``extra`` (:func:`compile_and_save`) and then kept for the process. ``lower`` runs only when needed: a warm
    process neither traces nor lowers."""
    found = held(key, kind)
    if found is not None:
        return found
    compiled = compile_and_save(key, lower(), extra)
    with _held_lock:
        entry = _held.setdefault(key, (compiled, extra))
    return Held(entry[0], entry[1], "compiled")


def read_count(kind: str = "") -> int:
    """How many executables of ``kind`` this process has read from the store (not traced, lowered or compiled)."""
    with _held_lock:
        return _read_counts.get(kind, 0)


def forget_held() -> None:
    """Drop every executable this process holds and the read counts, as a new process would start (tests)."""
    with _held_lock:
        _held.clear()
        _read_counts.clear()


# Custom-call targets whose kernels a serialized executable cannot bring up by itself: loaded in another process it
# failed with "Failed to lookup host symbol: Failed to materialize symbols: { (main, {
# tile_attention_fwd_mosaic_mosaic_gpu, ... }) }" (an H100, jax 0.11.2,
# experiments/results/first_video/cli_store_workers_h100_2026-12-06/). Matched as prefixes (mosaic_gpu_v2, ...).
# jaxlib's Mosaic GPU custom call serializes the kernel's object code with the executable; JIT-linking it again
# needs Mosaic GPU's runtime library, which the custom call finds through $MOSAIC_GPU_RUNTIME_LIB_PATH, set when
# jax.experimental.mosaic.gpu is imported (as in any process that lowers a Mosaic GPU kernel, but not in one that
# only loads a stored program). Such programs are stored, and that import runs before one is loaded: on an H100
# (jax 0.11.2) the loaded student sampler ran and gave the compiled one's latents bitwise
# (experiments/results/first_video/cli_early_start_h100_2026-12-07/). $JAX_VDIT_STORE_MOSAIC_GPU=0 switches it off,
# and a store where a prepared load still fails stops storing them by itself (_record_unloadable).
UNLOADABLE_CUSTOM_CALLS = ("mosaic_gpu",)
KERNEL_RUNTIME_ENV = "JAX_VDIT_STORE_MOSAIC_GPU"  # "0": do not store such programs (default: store them)
_UNLOADABLE_RECORD = "kernel-runtime-unloadable"  # a store where a prepared load still failed: store them no more


def _prepare_runtime(target: str) -> None:
    """Make the runtime that the kernels of custom-call ``target`` (an :data:`UNLOADABLE_CUSTOM_CALLS` prefix) need
    findable in this process before an executable calling them is deserialized."""
    if target.startswith("mosaic_gpu"):
        import jax.experimental.mosaic.gpu  # noqa: F401 - sets $MOSAIC_GPU_RUNTIME_LIB_PATH for the custom call
    else:
        raise ValueError(f"no known runtime for custom-call target {target!r}")


def _kernel_storing_switched_off() -> bool:
    return os.environ.get(KERNEL_RUNTIME_ENV, "1").strip().lower() in ("0", "false", "no", "off")


def stores_kernel_runtime(target: str) -> bool:
    """Whether a program calling ``target`` kernels is stored (with its runtime prepared on loading): unless
    ``$JAX_VDIT_STORE_MOSAIC_GPU=0``, and no earlier load of one failed in this store with these jax versions."""
    if _kernel_storing_switched_off():
        return False
    record = load_record(_UNLOADABLE_RECORD) or {}
    return record.get(target, {}).get("versions") != list(_versions())


def _versions() -> tuple[str, str]:
    import jaxlib

    return jax.__version__, jaxlib.__version__


def _record_unloadable(target: str, err: BaseException) -> None:
    record = load_record(_UNLOADABLE_RECORD) or {}
    record[target] = {"versions": list(_versions()), "error": f"{type(err).__name__}: {err}"[:500]}
    save_record(_UNLOADABLE_RECORD, record)
    _problems.append(f"{target} programs are no longer stored here: a stored one did not load with its runtime "
                     f"prepared ({type(err).__name__})")


def unloadable_custom_call(lowered) -> str | None:
    """The first custom-call target of :data:`UNLOADABLE_CUSTOM_CALLS` that the lowered program (a
    ``jax.stages.Lowered``) calls on a GPU, else None (other backends: None without reading the program)."""
    if _platform() != "gpu":
        return None
    text = lowered.as_text()
    for target in UNLOADABLE_CUSTOM_CALLS:
        if f"@{target}" in text or f'call_target_name = "{target}' in text:
            return target
    return None


def _platform() -> str:
    return jax.default_backend()


def _reloads_lose_code() -> bool:
    """Whether executables read from JAX's persistent cache lose their code when serialized again (XLA:CPU)."""
    return _platform() == "cpu"


def _write_atomically(path: Path, data: bytes) -> None:
    """A reader sees the old file, the new one, or none; concurrent writers (threads, processes) do not clash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def has(key: str) -> bool:
    """Whether the store holds an executable file for ``key`` (not whether it loads)."""
    directory = store_directory()
    return directory is not None and _file(directory, key).is_file()


OBJECT_MAGIC = b"jax-vdit-object-1\n"


def save_object(key: str, data: bytes) -> bool:
    """Write ``data`` (a pickled object, e.g. an abstract model) under ``key`` with a SHA-256 of it; False where the
    store is off or the write fails (the object is an optimisation)."""
    directory = store_directory()
    if directory is None:
        return False
    path = directory / f"{key}.obj"
    try:
        _write_atomically(path, OBJECT_MAGIC + hashlib.sha256(data).digest() + data)
        return True
    except OSError as err:
        _warn_once("could not write", path, err)
        return False


def load_object(key: str) -> bytes | None:
    """The bytes saved by :func:`save_object` under ``key``, or None where the store is off or the file is absent
    or damaged (a damaged file is removed and named in :func:`problems`)."""
    directory = store_directory()
    if directory is None:
        return None
    path = directory / f"{key}.obj"
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        _warn_once("ignored unreadable file", path, err)
        return None
    body = blob[len(OBJECT_MAGIC):]
    if not blob.startswith(OBJECT_MAGIC) or hashlib.sha256(body[32:]).digest() != body[:32]:
        _warn_once("ignored unusable file", path, ValueError("not a jax-vdit object file, or damaged"))
        path.unlink(missing_ok=True)
        return None
    return body[32:]


def save_record(name: str, record: Any) -> bool:
    """Write a small JSON ``record`` (e.g. which executables a program needs) under ``name`` in the store; False
    where the store is off or the write fails (the record is an optimisation)."""
    directory = store_directory()
    if directory is None:
        return False
    try:
        _write_atomically(directory / f"{name}.json", json.dumps(record).encode())
        return True
    except (OSError, TypeError, ValueError):
        return False


def load_record(name: str) -> Any:
    """The JSON record saved under ``name``, or None where the store is off or the record is absent or damaged."""
    directory = store_directory()
    if directory is None:
        return None
    try:
        return json.loads((directory / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
