"""The images of a run: scanned and checked, then decoded in DataLoader workers, in fixed batches.

Decoding runs in worker processes (Pillow), or, with the torchvision decoder,
in batches on the model's device (nvJPEG on a GPU) from the files' bytes.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import BadImagesError, UserError
from ..images import ImageSet
from .options import ExtractOptions


def scan_images(options: ExtractOptions) -> tuple[ImageSet, list[dict]]:
    """The run's images, checked cheaply first, and the bad ones left out
    (``skip_bad_images``) as ``{"file_name", "reason"}`` records.

    Raises:
        BadImagesError: bad images (naming each) without ``skip_bad_images``,
            or no good image at all.
    """
    images = ImageSet.scan(options.in_path, things=options.things, things_tsv=options.things_tsv,
                           fraction=options.fraction, rnd_seed=options.rnd_seed)
    bad = images.check()
    skipped = [{"file_name": images.file_names[row], "reason": reason} for row, reason in bad]
    if bad and not options.skip_bad_images:
        listed = "; ".join(f"{s['file_name']}: {s['reason']}" for s in skipped[:10])
        more = f" (+{len(bad) - 10} more)" if len(bad) > 10 else ""
        raise BadImagesError(f"{len(bad)} bad image(s) under {options.in_path}: {listed}{more}; fix or "
                             "remove them, or pass --skip-bad-images to leave them out")
    if bad:
        images = images.without([row for row, _ in bad])
        if not len(images):
            raise BadImagesError(f"every image under {options.in_path} is bad; nothing to extract")
    return images, skipped


class ImageRows(Dataset):
    """Images by row: decoded and preprocessed (Pillow), or, for the
    torchvision decoder, the file's bytes, decoded later on the model's
    device. A bad image becomes an error string instead of an exception, so
    the main process can name it."""

    def __init__(self, images: ImageSet, transform: Callable, decoder: str = "pil") -> None:
        self.images, self.transform, self.decoder = images, transform, decoder

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, row: int):
        try:
            if self.decoder == "torchvision":   # plain bytes: they cross process boundaries cheaply
                return self.images.path(row).read_bytes(), row, ""
            return self.transform(self.images.load(row)), row, ""
        except Exception as error:  # any decoder failure names the file
            return None, row, f"{type(error).__name__}: {error}"


def _collate(items):
    good = [(x, row) for x, row, err in items if not err]
    bad = [(row, err) for _x, row, err in items if err]
    # Pillow-decoded images stack into a batch; raw file bytes stay a list.
    if good and isinstance(good[0][0], bytes):
        batch = [x for x, _ in good]
    else:
        batch = torch.stack([x for x, _ in good]) if good else None
    return batch, np.array([row for _, row in good], dtype=np.int64), bad


def batches_of(todo: np.ndarray, n_rows: int, batch_size: int) -> list[list[int]]:
    """The batches holding the rows ``todo``: fixed slices of the full row range.

    A resumed or sharded run thus feeds the model exactly the batches an
    uninterrupted run would, and its results are bit-identical; rows already
    written are computed again (at most one batch per gap) but not written.
    """
    return [list(range(k * batch_size, min((k + 1) * batch_size, n_rows)))
            for k in np.unique(todo // batch_size)]


def image_loader(images: ImageSet, transform: Callable, batches: Sequence[Sequence[int]],
                 options: ExtractOptions) -> DataLoader:
    """Batches ``(images or file bytes, rows, [(row, error)])`` in the order of ``batches``."""
    workers = options.num_workers
    return DataLoader(ImageRows(images, transform, options.decoder), batch_sampler=batches,
                      num_workers=workers, collate_fn=_collate,
                      pin_memory=options.torch_device.type == "cuda",
                      persistent_workers=workers > 0, prefetch_factor=2 if workers else None)


def decode_batch(files: list[bytes], names: list[str], transform: Callable,
                 device: torch.device) -> torch.Tensor:
    """torchvision decoding: JPEGs decoded together on ``device`` (nvJPEG on a
    GPU), other formats on the CPU; then the transform runs on the tensors."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg
    data = [torch.frombuffer(bytearray(f), dtype=torch.uint8) for f in files]
    jpeg = [i for i, name in enumerate(names) if name.lower().endswith((".jpg", ".jpeg"))]
    decoded: list[torch.Tensor | None] = [None] * len(data)
    try:
        if jpeg:
            for i, image in zip(jpeg, decode_jpeg([data[i] for i in jpeg], device=device,
                                                  mode=ImageReadMode.RGB)):
                decoded[i] = image
        for i, image in enumerate(decoded):
            if image is None:
                decoded[i] = decode_image(data[i], mode=ImageReadMode.RGB).to(device)
    except RuntimeError as error:
        raise BadImagesError(f"--decoder torchvision could not decode an image of this batch ({error}); "
                             "use the default --decoder pil") from error
    try:
        return torch.stack([transform(image) for image in decoded])
    except (TypeError, AttributeError) as error:
        raise UserError("--decoder torchvision needs a transform that takes image tensors "
                        f"(torchvision's weights transforms do): {error}") from error
