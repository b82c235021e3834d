"""``CompileMeter`` reads JAX's own compile events: it counts the programs a block builds (in its thread, or in all
threads), nothing for a program already compiled, and the time the backend spent."""

from __future__ import annotations

import threading

import jax
import jax.numpy as jnp

from jax_vdit.compile_meter import CompileMeter


def test_counts_new_programs_of_its_thread_only():
    f = jax.jit(lambda x: jnp.tanh(x) @ x.T + 1.0)
    x = jnp.ones((32, 32))
    with CompileMeter() as meter:
        f(x).block_until_ready()
        worker = threading.Thread(target=lambda: jax.jit(lambda y: jnp.cos(y) * 7.0)(x).block_until_ready())
        worker.start()
        worker.join()
    assert meter.programs == 1 and meter.backend_s > 0 and meter.compile_s >= meter.backend_s
    with CompileMeter() as again:
        f(x).block_until_ready()  # cached executable: nothing is traced or compiled
    assert again.programs == 0 and again.compile_s == 0.0
    with CompileMeter(all_threads=True) as everyone:
        worker = threading.Thread(target=lambda: jax.jit(lambda y: jnp.sin(y) * 5.0)(x).block_until_ready())
        worker.start()
        worker.join()
    assert everyone.programs == 1
    assert set(everyone.report()) >= {"compile_s", "backend_compile_s", "programs", "cache_hits", "cache_misses"}
