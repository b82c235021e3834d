"""The three-stage efficiency pipeline of Efficient-vDiT, as objectives and tools on top of ``training.train``:

1. :mod:`mlcd`: multi-step latent consistency distillation (few-step dense student);
2. :mod:`mask_search`: per-layer tile-mask search under an error threshold r;
3. :mod:`kd`: knowledge distillation from the dense MLCD model into the tile-sparse one.
"""

from jax_vdit.distill.kd import SparseKDObjective
from jax_vdit.distill.mask_search import LayerMaskReport, candidate_masks, search_masks, search_masks_over_thresholds
from jax_vdit.distill.mlcd import MLCDObjective, segment_edges, solver_grid

__all__ = ["LayerMaskReport", "MLCDObjective", "SparseKDObjective", "candidate_masks", "search_masks",
           "search_masks_over_thresholds", "segment_edges", "solver_grid"]
