"""The model made ready for a run: loaded, on its device, hooked, and the store Layout its outputs need."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..capture import Extractor
from ..errors import BadImagesError, InputSizeError, UserError
from ..images import ImageSet
from ..models import Model, load_model
from ..store import LayerSpec, Layout, choose_chunks
from .options import ExtractOptions
from .target import Target

PROBE_ATTEMPTS = 16   # rows tried for a first image that decodes (a broken one may pass the pre-check)


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


def hook_and_lay_out(model: Model, options: ExtractOptions, images: ImageSet,
                     target: Target) -> tuple[Extractor, Layout]:
    """The Extractor for the run's modules, and the Layout of their stored outputs
    at ``target`` (its codec and shards), from a probe forward pass of a real
    image of the set as the transform makes it (so a 160-px transform gives
    5x5 maps, not 224's 7x7).

    Raises:
        InputSizeError: the transform gives images of different shapes, or a
            size the model refuses (timm's DINOv2 takes 518 px only).
    """
    extractor = Extractor(model, options.module_names)
    sample = probe_input(model, images)
    try:
        shapes = extractor.probe(sample.unsqueeze(0).to(options.torch_device))
    except UserError:
        raise
    except Exception as error:  # the model's own refusal of this input size (an assertion, a shape error)
        raise _refused_size(model, sample, error) from error
    itemsize = np.dtype(options.dtype).itemsize
    specs = []
    for name in options.module_names:
        native = shapes[name]
        stored = (math.prod(native),) if options.flatten_acts else native
        specs.append(LayerSpec(module_name=name, shape=stored, native_shape=native, dtype=options.dtype,
                               chunks=choose_chunks(stored, itemsize, options.chunk_images,
                                                    options.chunk_channels),
                               module_layout="NHWC" if name in extractor.channels_last else None))
    layout = Layout(n_rows=len(images), layers=tuple(specs), chunk_images=options.chunk_images,
                    compression=target.compression, compression_level=options.compression_level,
                    shard_rows=target.shard_rows(specs, len(images)))
    return extractor, layout


def probe_input(model: Model, images: ImageSet) -> torch.Tensor:
    """The first image of the set that decodes, as the transform makes it; refused
    when the transform would make images of other aspect ratios another shape
    (so that a run never stops at its first odd-sized image, rows half written)."""
    errors = []
    for row in range(min(len(images), PROBE_ATTEMPTS)):
        try:
            image = images.load(row)
        except Exception as error:  # any decoder failure: the run itself names or skips it
            errors.append(f"{images.file_names[row]} ({type(error).__name__}: {error})")
            continue
        sample = model.transform(image)
        for other in (image.resize((image.width * 2, image.height)), image.resize((image.width, image.height * 2))):
            shape = tuple(model.transform(other).shape)
            if shape != tuple(sample.shape):
                raise InputSizeError(
                    f"the transform's output size depends on the image ({_size(sample.shape)} for "
                    f"{images.file_names[row]}, {_size(shape)} for it stretched): a store needs one size; end the "
                    "transform with a fixed crop, e.g. T.CenterCrop(224), or resize to T.Resize((224, 224))")
        return sample
    raise BadImagesError(f"none of the first {len(errors)} images decodes ({'; '.join(errors[:3])}): "
                         "fix or remove them")


def _refused_size(model: Model, sample: torch.Tensor, error: Exception) -> InputSizeError:
    """One line for a model that fails on the transform's input size, saying what to do."""
    reason = " ".join(str(error).split())[:160] or type(error).__name__
    expected = getattr(getattr(model.module, "patch_embed", None), "img_size", None)
    hint = (f"; it takes {_size(expected)} only: use a transform that makes {_size(expected)} images, or build "
            "it with timm.create_model(..., dynamic_img_size=True) to take other sizes") if expected else \
        ": use a transform that makes images of the size the model expects"
    return InputSizeError(f"model {model.name} fails on the transform's {_size(sample.shape)} images "
                          f"({type(error).__name__}: {reason}){hint}")


def _size(shape) -> str:
    return "x".join(str(int(s)) for s in shape)
