"""The model made ready for a run: loaded, on its device, hooked, and the store Layout its outputs need."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..capture import Extractor
from ..models import Model, load_model
from ..store import LayerSpec, Layout, choose_chunks
from .options import ExtractOptions
from .target import Target


def ready_model(options: ExtractOptions) -> Model:
    """``options.model``, or the one ``model_name`` and its weights name; on the run's device."""
    model = options.model
    if model is None:
        model = load_model(options.model_name, source=options.source, weights=options.weights,
                           model_path=options.model_path, seed=options.rnd_seed)
    model.module.to(options.torch_device)
    if options.channels_last:
        model.module.to(memory_format=torch.channels_last)
    return model


def hook_and_lay_out(model: Model, options: ExtractOptions, n_rows: int,
                     target: Target) -> tuple[Extractor, Layout]:
    """The Extractor for the run's modules, and the Layout of their stored outputs
    at ``target`` (its codec and shards), from one probe forward pass of a blank image."""
    extractor = Extractor(model, options.module_names)
    shapes = extractor.probe(torch.zeros(1, 3, *model.input_size, device=options.torch_device))
    itemsize = np.dtype(options.dtype).itemsize
    specs = []
    for name in options.module_names:
        native = shapes[name]
        stored = (math.prod(native),) if options.flatten_acts else native
        specs.append(LayerSpec(module_name=name, shape=stored, native_shape=native, dtype=options.dtype,
                               chunks=choose_chunks(stored, itemsize, options.chunk_images,
                                                    options.chunk_channels),
                               module_layout="NHWC" if name in extractor.channels_last else None))
    layout = Layout(n_rows=n_rows, layers=tuple(specs), chunk_images=options.chunk_images,
                    compression=target.compression, compression_level=options.compression_level,
                    shard_rows=target.shard_rows(specs, n_rows))
    return extractor, layout
