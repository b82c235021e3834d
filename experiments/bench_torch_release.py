"""Benchmark: the PyTorch release's time to its first sampling step, for comparison with ``bench_first_video``.

The release (Open-Sora-Plan v1.2.0, ``OpenSoraT2V``, eager PyTorch) compiles nothing: its time to first step is the
imports, the weights, and one classifier-free-guidance forward (batch 2) with cuDNN/cuBLAS warming up. This script
measures that in a fresh process, with random weights in bf16 built on the GPU (a user loading the checkpoint pays
its read instead; ``init_s`` is reported apart for that reason), then times a few more steps.

The release source is not part of this project. ``--extract`` writes the five files the transformer needs from a
git clone of Open-Sora-Plan (tag ``v1.2.0``) into a folder that git ignores; ``--src`` runs them. The release's
package ``__init__`` files pull in its VAE, UDiT and training utilities, so this script registers the three package
levels itself and provides the one helper (``to_2tuple``) that the transformer takes from ``opensora.utils.utils``.
The release needs ``diffusers`` 0.28 (and a ``huggingface_hub`` older than 0.26); carry their wheels to the GPU.

    python -m experiments.bench_torch_release --extract /path/to/Open-Sora-Plan --to carry/osp_v120
    python -m experiments.bench_torch_release --src carry/osp_v120 --size 29x720p --steps 3 --out $OUT
    python -m experiments.bench_torch_release --src carry/osp_v120 --size tiny --device cpu   # a CPU check
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()  # the clock starts before torch is imported

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402
from pathlib import Path  # noqa: E402

RELEASE_TAG = "v1.2.0"
RELEASE_FILES = ("opensora/models/diffusion/opensora/modeling_opensora.py",
                 "opensora/models/diffusion/opensora/modules.py",
                 "opensora/models/diffusion/opensora/rope.py",
                 "opensora/utils/parallel_states.py",
                 "opensora/utils/communications.py")
# size -> (latent (C, T, H, W), text tokens, release constructor kwargs); the release's "OpenSoraT2V-ROPE-L/122"
# (32 layers, 24 heads of 96, cross-attention 2304, caption channels 4096) at its sample sizes
_FULL = dict(num_layers=32, attention_head_dim=96, num_attention_heads=24, cross_attention_dim=2304,
             caption_channels=4096)
SIZES = {
    "29x720p": ((4, 8, 90, 160), 512, _FULL),
    "93x720p": ((4, 24, 90, 160), 512, _FULL),
    "tiny": ((4, 3, 8, 8), 8, dict(num_layers=2, attention_head_dim=12, num_attention_heads=2, cross_attention_dim=24,
                                   caption_channels=12)),
}


def log(*a) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)


def extract(repo: Path, to: Path) -> list[Path]:
    """Write the release transformer's source files (tag ``v1.2.0``) from the git clone ``repo`` under ``to``."""
    git_dir = repo if (repo / "HEAD").exists() and not (repo / ".git").exists() else repo / ".git"
    written = []
    for rel in RELEASE_FILES:
        text = subprocess.run(["git", "--git-dir", str(git_dir), "show", f"{RELEASE_TAG}:{rel}"], check=True,
                              capture_output=True, text=True).stdout
        path = to / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def _to_2tuple(x):
    """The release's ``to_2tuple``: a scalar twice, an iterable as a tuple."""
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)


def load_release(src: Path):
    """Import the release's ``OpenSoraT2V`` from ``src`` without its package ``__init__`` files."""
    for name in ("opensora", "opensora.models", "opensora.models.diffusion", "opensora.models.diffusion.opensora",
                 "opensora.utils"):
        module = types.ModuleType(name)
        module.__path__ = [str(src / name.replace(".", "/"))]
        sys.modules[name] = module
    utils = types.ModuleType("opensora.utils.utils")
    utils.to_2tuple = _to_2tuple
    sys.modules["opensora.utils.utils"] = utils
    # diffusers 0.28 imports transformers' CLIP classes where transformers is installed; the transformer needs
    # none of them, and a current transformers wants a newer huggingface_hub than diffusers 0.28 runs with
    import diffusers.utils.import_utils as diffusers_imports

    diffusers_imports._transformers_available = False
    from opensora.models.diffusion.opensora.modeling_opensora import OpenSoraT2V

    return OpenSoraT2V


def child(src: Path, size: str, steps: int, device: str, attention_mode: str) -> dict:
    """One fresh-process run: imports, random bf16 weights on ``device``, ``steps`` CFG steps; seconds each."""
    import torch

    OpenSoraT2V = load_release(src)
    row: dict = {"import_s": time.perf_counter() - _T0}
    latent_shape, text_len, arch = SIZES[size]
    c, t, h, w = latent_shape
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tick = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        model = OpenSoraT2V(in_channels=c, out_channels=c, sample_size=(h, w), sample_size_t=t, patch_size=2,
                            patch_size_t=1, norm_type="ada_norm_single", activation_fn="gelu-approximate",
                            attention_bias=True, attention_mode=attention_mode, use_rope=True,
                            interpolation_scale_t=1.0, interpolation_scale_h=1.0, interpolation_scale_w=1.0, **arch)
    model = model.to(dtype=dtype).eval()
    if device == "cuda":
        torch.cuda.synchronize()
    row["init_s"] = time.perf_counter() - tick
    row["params"] = sum(p.numel() for p in model.parameters())
    gen = torch.Generator(device=device).manual_seed(0)
    latents = torch.randn((1, c, t, h, w), generator=gen, device=device, dtype=dtype)
    text = torch.randn((2, 1, text_len, arch["caption_channels"]), generator=gen, device=device, dtype=dtype)
    text_mask = torch.ones((2, 1, text_len), device=device, dtype=torch.long)
    video_mask = torch.ones((2, t, h, w), device=device, dtype=dtype)
    guidance = 4.5
    step_s = []
    with torch.no_grad():
        for i in range(steps):
            tick = time.perf_counter()
            x = torch.cat([latents, latents])
            timestep = torch.full((2,), 999 - 10 * i, device=device, dtype=torch.long)
            out = model(x, timestep=timestep, encoder_hidden_states=text, attention_mask=video_mask,
                        encoder_attention_mask=text_mask, return_dict=False)[0]
            uncond, cond = out.chunk(2)
            eps = uncond + guidance * (cond - uncond)
            latents = latents - 0.01 * eps  # a stand-in update: the step's cost is the forward
            if device == "cuda":
                torch.cuda.synchronize()
            step_s.append(time.perf_counter() - tick)
            if i == 0:
                row["first_step_end_s"] = time.perf_counter() - _T0
    if not bool(torch.isfinite(latents.float()).all()):
        raise FloatingPointError("the release's output is not finite")
    row.update(first_step_s=step_s[0], step_s=[round(x, 4) for x in step_s[1:]],
               time_to_first_step_s=row["first_step_end_s"] - row["init_s"],
               peak_gib=(torch.cuda.max_memory_allocated() / 2**30) if device == "cuda" else None)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--extract", type=Path, default=None, help="git clone of Open-Sora-Plan to take the files from")
    p.add_argument("--to", type=Path, default=None, help="folder to write the extracted files into")
    p.add_argument("--src", type=Path, default=None, help="folder written by --extract")
    p.add_argument("--size", choices=sorted(SIZES), default="29x720p")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--runs", type=int, default=2, help="fresh processes (the first may also warm the disk cache)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--attention-mode", default=None, help="the release's attention_mode (default: xformers on "
                   "cuda, the release's default, which is PyTorch's memory-efficient SDPA; math on cpu)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.extract is not None:
        if args.to is None:
            p.error("--extract needs --to")
        for path in extract(args.extract, args.to):
            print(path)
        return
    if args.src is None:
        p.error("--src (a folder written by --extract) is required")
    mode = args.attention_mode or ("xformers" if args.device == "cuda" else "math")
    if args.child:
        print(json.dumps(child(args.src.resolve(), args.size, args.steps, args.device, mode)))
        return
    runs = []
    for r in range(args.runs):
        cmd = [sys.executable, "-m", "experiments.bench_torch_release", "--child", "--src", str(args.src),
               "--size", args.size, "--steps", str(args.steps), "--device", args.device, "--attention-mode", mode]
        proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"run {r} failed:\n{proc.stderr[-6000:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        log(f"run {r}: {runs[-1]}")
    import torch

    result = {"date": dt.date.today().isoformat(), "command": "python -m experiments.bench_torch_release " +
              " ".join(sys.argv[1:] if argv is None else argv), "release": f"Open-Sora-Plan {RELEASE_TAG}",
              "device": torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "size": args.size, "attention_mode": mode, "weights": "random, bf16 on "
              "cuda / fp32 on cpu, built on the device", "batch": "2 (CFG)", "runs": runs}
    print(json.dumps(result, indent=1))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"torch_release_{args.size}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
