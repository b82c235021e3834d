"""``vdit sample``: latents (and an mp4 with a VAE) from a checkpoint and prompts or embeddings."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _load_text(args, caption_channels: int):
    import numpy as np

    from jax_vdit.text_encoder import encode_prompts, load_embeddings

    if args.embeddings:
        data = load_embeddings(args.embeddings)
        if data["text"].shape[-1] != caption_channels:
            raise ValueError(f"embeddings have {data['text'].shape[-1]} channels, the model expects {caption_channels}")
        return data
    if not args.prompt:
        raise ValueError("give --prompt (with --text-encoder) or --embeddings")
    if not args.text_encoder:
        raise ValueError("--prompt needs --text-encoder: a local google/mt5-xxl folder, or 'toy' for toy-world "
                         "models; or pass precomputed --embeddings (no download happens at run time)")
    data = encode_prompts(list(args.prompt), args.text_encoder, negative_prompt=args.negative_prompt,
                          caption_channels=caption_channels)
    return {k: np.asarray(v) for k, v in data.items()}


def _cmd_sample(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp
    from safetensors.numpy import save_file

    from jax_vdit.config import VideoSize
    from jax_vdit.model.attention import attention_from_spec
    from jax_vdit.sampling import plan_from_name
    from jax_vdit.sampling import StepTimer, sample
    from jax_vdit.io import load_model

    size = VideoSize(args.frames, args.height, args.width)  # validates before anything slow happens
    if args.compile_cache:
        # compiled sampler and VAE stages are reused across runs (the first VAE decode compiles for ~2 minutes)
        jax.config.update("jax_compilation_cache_dir", str(Path(args.compile_cache).expanduser()))
    plan = plan_from_name(args.sampler, args.steps, args.edges)
    t0 = time.perf_counter()
    model = load_model(args.checkpoint, param_dtype=args.param_dtype, compute_dtype=args.compute_dtype,
                       config=args.config)
    load_s = time.perf_counter() - t0
    text = _load_text(args, model.cfg.caption_channels)
    attention = attention_from_spec(args.attention, model.cfg.num_layers, size.latent_shape[1],
                                    tile_backend=args.tile_backend)
    use_cfg = args.guidance is not None and args.guidance != 1.0 and "negative_text" in text
    kwargs = dict(key=jax.random.key(args.seed), latent_shape=size.latent_shape, plan=plan, attention=attention,
                  latent_dtype=jnp.float32 if args.fp32_latents else jnp.bfloat16)
    if use_cfg:
        kwargs.update(negative_text=jnp.asarray(text["negative_text"]), negative_mask=jnp.asarray(text["negative_mask"]),
                      guidance_scale=args.guidance)
    pos, mask = jnp.asarray(text["text"]), jnp.asarray(text["text_mask"])
    # compile (one step) separately so that sampling time and per-step times are clean
    t0 = time.perf_counter()
    jax.block_until_ready(sample(model, pos, mask, **dict(kwargs, plan=plan.truncated(1))))
    compile_s = time.perf_counter() - t0
    timer = StepTimer(plan.num_steps, disable=args.quiet)
    t0 = time.perf_counter()
    latents = jax.block_until_ready(sample(model, pos, mask, progress=timer, **kwargs))
    jax.effects_barrier()
    sample_s = time.perf_counter() - t0
    timer.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({"latents": jax.device_get(latents).astype("float32")}, str(out))
    steps = timer.times[1:] or timer.times
    report = {"load_s": round(load_s, 2), "compile_s": round(compile_s, 2), "sampling_s": round(sample_s, 2),
              "s_per_step_median": round(sorted(steps)[len(steps) // 2], 4) if steps else None,
              "latent_shape": list(latents.shape), "out": str(out)}
    if args.vae:
        from jax_vdit.io import load_vae
        from jax_vdit.vae import decode_latents_to_video, write_video

        t0 = time.perf_counter()
        vae = load_vae(args.vae, dtype=jnp.bfloat16 if args.compute_dtype == "bfloat16" else jnp.float32)
        frames = decode_latents_to_video(vae, latents)
        for i, video in enumerate(frames):
            path = out.with_suffix("") if len(frames) == 1 else out.with_name(f"{out.stem}_{i}")
            write_video(video, path.with_suffix(".mp4"), fps=24)
        report["decode_s"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(report))
    return 0


def register(sub) -> None:
    s = sub.add_parser("sample", formatter_class=argparse.ArgumentDefaultsHelpFormatter, help="generate latents / video from a prompt")
    s.add_argument("checkpoint", help="orbax model checkpoint, release folder, or weights file (with --config)")
    s.add_argument("--config", default=None, help="preset name when the checkpoint has no config")
    s.add_argument("--prompt", action="append", help="text prompt (repeat for a batch)")
    s.add_argument("--negative-prompt", default=None, help="default: the release's negative prompt")
    s.add_argument("--embeddings", default=None, help="precomputed text embeddings (.safetensors)")
    s.add_argument("--text-encoder", default=None, help="local google/mt5-xxl folder, or 'toy'")
    s.add_argument("--frames", type=int, default=29, help="pixel frames, 4k+1")
    s.add_argument("--height", type=int, default=720)
    s.add_argument("--width", type=int, default=1280)
    s.add_argument("--sampler", default="euler_ancestral", choices=["euler_ancestral", "ddim", "consistency"])
    s.add_argument("--steps", type=int, default=100)
    s.add_argument("--edges", default=None, help="consistency sampler: comma-separated segment edges, e.g. 0,250,500,750")
    s.add_argument("--guidance", type=float, default=7.5, help="CFG scale (1 disables CFG)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--attention", default="dense", help="dense (cuDNN) | full (dense through the tile kernel: the fastest dense path on H100) | "
                   "k:m (e.g. 1:7) on every layer | mask schedule JSON")
    s.add_argument("--tile-backend", default="auto")
    s.add_argument("--param-dtype", default="bfloat16")
    s.add_argument("--compute-dtype", default="bfloat16")
    s.add_argument("--fp32-latents", action="store_true", help="keep latents in fp32 between steps")
    s.add_argument("--vae", default=None, help="CausalVAE folder: decode to mp4 next to --out")
    s.add_argument("--out", default="outputs/sample.safetensors")
    s.add_argument("--compile-cache", default="~/.cache/jax-vdit/xla",
                   help="persistent XLA compilation cache directory ('' to disable)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_sample)
