"""CLI: ``python -m convert SRC OUT`` (also installed as ``vdit-convert``).

SRC is a release folder (``config.json`` + ``diffusion_pytorch_model.safetensors`` or a sharded index), a lone
``.safetensors`` file, or a PyTorch ``.pt/.bin/.ckpt`` file. OUT is the orbax model checkpoint directory to write.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vdit-convert", description=__doc__.splitlines()[0])
    p.add_argument("source", help="release folder, .safetensors, sharded index, or .pt/.bin/.ckpt")
    p.add_argument("output", help="output directory (orbax checkpoint + jax_vdit_model.json)")
    p.add_argument("--config", default=None,
                   help="preset name (e.g. osp-v1.2-29x720p) or path of a release config.json; default: the "
                        "config.json next to the source")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="storage dtype of the written parameters")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from convert.transformer import convert_transformer  # JAX: only once there is something to convert

    try:
        report = convert_transformer(
            args.source, args.output, config=args.config, param_dtype=args.dtype, overwrite=args.overwrite,
            show_progress=not args.quiet,
        )
    except (FileNotFoundError, FileExistsError, ValueError, KeyError) as err:
        print(f"vdit-convert: error: {err}", file=sys.stderr)
        return 2
    print(
        f"wrote {report.output} ({report.num_tensors} tensors, {report.num_params:,} parameters, "
        f"{report.param_dtype}) in {report.seconds:.1f} s; peak RSS {report.peak_rss_bytes / 2**30:.2f} GiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
