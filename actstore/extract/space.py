"""The free-space check before a run, and the measured plan of ``--dry-run``."""
from __future__ import annotations

import numpy as np
import torch

from ..capture import Extractor
from ..errors import OutOfSpaceError
from ..images import ImageSet
from ..models import Model
from ..store import Layout, free_space
from .buffers import HostBuffers, autocast
from .options import ExtractOptions
from .plan import Plan, human_size, measure
from .target import Target


def check_space(extractor: Extractor, model: Model, images: ImageSet, layout: Layout, target: Target,
                rows: int, options: ExtractOptions) -> Plan | None:
    """Measure the plan for a dry run, or when the raw size alone would not fit.
    The sample runs with the run's --amp and --channels-last (reduced-precision
    outputs compress far better), decoded by Pillow whatever the --decoder.

    Raises:
        OutOfSpaceError: the estimate exceeds the free space and ``force`` is not set.
    """
    free = free_space(target.path)
    if not options.dry_run and (free is None or target.most_bytes(layout, rows) <= free):
        return None
    device = options.torch_device

    def forward(sample: np.ndarray) -> dict[str, np.ndarray]:
        batch = torch.stack([model.transform(images.load(int(r))) for r in sample]).to(device)
        if options.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        out = HostBuffers(torch.device("cpu"), len(sample), options.dtype, options.flatten_acts).take()
        with autocast(device, options.amp):
            extractor(batch, into=out.fill)   # cast and shaped as the run stores them
        return out.arrays()

    plan = measure(forward, images, layout, target.sample_bytes, rows, free)
    plan.files = target.file_count(layout)
    if not options.dry_run and not plan.fits and not options.force:
        raise OutOfSpaceError(f"the store needs about {human_size(plan.estimated_bytes)} but {target.path} "
                              f"has {human_size(plan.free_bytes)} free: free space, choose another "
                              "--out-path, or pass --force to start anyway")
    return plan
