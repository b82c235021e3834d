"""``vdit prepare-data``: videos + captions -> training shards (see ``docs/data_format.md``).

``register(subparsers)`` adds the subcommand to a ``vdit`` parser; ``main(argv)`` runs it on its own
(``python -m jax_vdit.data.command --help``). Heavy imports (JAX, the VAE, Grain) happen in :func:`run` only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jax_vdit.data.presets import DTYPE_CHOICES, POSTERIOR_CHOICES, SIZE_PRESETS, TILING_CHOICES, size_preset

NAME = "prepare-data"
HELP = "encode videos + captions into training shards (latents, text embeddings, manifest)"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" for options whose default means something (not for None, False or required ones)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The prepare-data flags (every one with a help text; defaults are shown by the formatter)."""
    io = p.add_argument_group("inputs and output")
    io.add_argument("--videos", required=True, help="folder the caption file's video paths are relative to")
    io.add_argument("--captions", required=True,
                    help="JSONL file of {\"video\": path, \"caption\": text} lines, or an Open-Sora-Plan JSON list "
                         "of {\"path\", \"cap\"} objects")
    io.add_argument("--out", required=True, help="output folder (an existing one with the same settings is resumed)")
    io.add_argument("--vae", required=True, help="CausalVAE folder (config.json + checkpoint.ckpt or safetensors)")
    io.add_argument("--vae-dtype", default="float32", choices=["float32", "bfloat16"], help="VAE compute dtype")
    text = io.add_mutually_exclusive_group(required=True)
    text.add_argument("--text-encoder", default=None,
                      help="local google/mt5-xxl folder (needs jax-vdit[text]), or 'toy' / 'toy:<world>' for the "
                           "toy world's stand-in encoder")
    text.add_argument("--embeddings", default=None,
                      help="precomputed caption embeddings (.safetensors: text, text_mask, uncond_text, uncond_mask "
                           "and a 'captions' metadata list; see docs/data_format.md)")

    clip = p.add_argument_group("clips")
    clip.add_argument("--size", default=None, choices=sorted(SIZE_PRESETS),
                      help="named size: <frames>x<height>p with width 1280 (720p) or 640 (480p); --frames/--height/"
                           "--width override its parts (default: 29x720p)")
    clip.add_argument("--frames", type=int, default=None, help="frames per clip, 4k+1 (default: the --size preset's, else 29)")
    clip.add_argument("--height", type=int, default=None, help="clip height, multiple of 16 (default: the --size preset's, else 720)")
    clip.add_argument("--width", type=int, default=None, help="clip width, multiple of 16 (default: the --size preset's, else 1280)")
    clip.add_argument("--fps", type=float, default=24.0,
                      help="target frame rate: take every round(source_fps / fps)-th frame; 0 = every frame")
    clip.add_argument("--clip-start", default="center", choices=["center", "begin"],
                      help="where the clip's window sits in each video")
    clip.add_argument("--allow-upscale", action="store_true",
                      help="upscale videos smaller than the clip size instead of skipping them")

    enc = p.add_argument_group("encoding and storage")
    enc.add_argument("--posterior", default="sample", choices=POSTERIOR_CHOICES,
                     help="store a posterior sample (the release's training input) or the posterior mean")
    enc.add_argument("--seed", type=int, default=0, help="seed of the per-clip posterior samples")
    enc.add_argument("--tiling", default="sample-script", choices=TILING_CHOICES,
                     help="VAE tiling (sample-script: the release's 512/64/29/8 tiles)")
    enc.add_argument("--latent-dtype", default="float16", choices=DTYPE_CHOICES, help="latent storage dtype")
    enc.add_argument("--text-dtype", default="bfloat16", choices=DTYPE_CHOICES, help="text embedding storage dtype")
    enc.add_argument("--no-trim-text", action="store_true",
                     help="store all L embedding rows per caption (default: only the valid tokens; padding reads "
                          "back as zeros)")
    enc.add_argument("--shard-size", type=int, default=64, help="clips per shard file")
    enc.add_argument("--text-batch-size", type=int, default=16, help="captions per text-encoder call")
    enc.add_argument("--workers", type=int, default=2, help="threads decoding videos ahead of the VAE (0: none)")
    enc.add_argument("--no-progress", action="store_true", help="no progress bar")
    from jax_vdit.cli.compile_cache import add_compile_cache_arguments  # here: jax_vdit.cli imports this module

    add_compile_cache_arguments(enc)
    return p


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``prepare-data`` to a ``vdit`` subparsers object; the parser's ``func`` is :func:`run`."""
    p = subparsers.add_parser(NAME, help=HELP, description=HELP,
                              formatter_class=HelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run, command=NAME)
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"vdit {NAME}", description=HELP,
                                formatter_class=HelpFormatter)
    return add_arguments(p)


def resolve_size(args: argparse.Namespace) -> tuple[int, int, int]:
    """(frames, height, width) from --size and the explicit flags (explicit wins; default 29x720p)."""
    frames, height, width = size_preset(args.size) if args.size else size_preset("29x720p")
    return (args.frames if args.frames is not None else frames, args.height if args.height is not None else height,
            args.width if args.width is not None else width)


def config_from_args(args: argparse.Namespace):
    from jax_vdit.data.prepare import PrepareConfig

    frames, height, width = resolve_size(args)
    return PrepareConfig(
        frames=frames, height=height, width=width, fps=args.fps if args.fps else None, clip_start=args.clip_start,
        allow_upscale=args.allow_upscale, latent_dtype=args.latent_dtype, text_dtype=args.text_dtype,
        trim_text=not args.no_trim_text, posterior=args.posterior, seed=args.seed, tiling=args.tiling,
        shard_size=args.shard_size, text_batch_size=args.text_batch_size, read_workers=args.workers)


def run(args: argparse.Namespace) -> int:
    """Run prepare-data for parsed arguments; 0 on success, 2 (with a message on stderr) on an input error."""
    from jax_vdit.data.prepare import prepare_data
    from jax_vdit.data.shards import DatasetIntegrityError

    try:
        config = config_from_args(args)
        from jax_vdit.cli.compile_cache import setup_compile_cache

        setup_compile_cache(args)  # a rerun (e.g. after a kill) reads the encoder's stages instead of compiling
        import jax.numpy as jnp

        from jax_vdit.data.text import text_source_from_spec
        from jax_vdit.io import load_vae

        vae = load_vae(args.vae, dtype=jnp.bfloat16 if args.vae_dtype == "bfloat16" else jnp.float32)
        text = text_source_from_spec(args.text_encoder, args.embeddings)
        manifest = prepare_data(args.videos, args.captions, args.out, vae=vae, text=text, config=config,
                                vae_path=args.vae, show_progress=not args.no_progress)
    except (ValueError, FileNotFoundError, DatasetIntegrityError) as err:
        print(f"vdit {NAME}: error: {err}", file=sys.stderr)
        return 2
    skipped = ", ".join(f"{n} {reason}" for reason, n in manifest.skip_counts().items()) or "none"
    print(f"{manifest.num_records} clips in {len(manifest.shards)} shards at {args.out} (latents "
          f"{tuple(manifest.latent_shape)}, text {tuple(manifest.text_shape)}); skipped: {skipped}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
