"""The images of a run: scanned and checked, then decoded in DataLoader workers, in fixed batches.

Decoding runs in worker processes (Pillow), or, with the torchvision decoder,
JPEGs in batches on the model's device (nvJPEG on a GPU) from the files' bytes.
"""
from __future__ import annotations

import io
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.functional import pil_to_tensor

from ..errors import BadImagesError, BadOptionError
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
    torchvision decoder, a JPEG's bytes (decoded later on the model's device)
    and any other image as an 8-bit RGB tensor decoded here by Pillow. A bad
    image becomes an error string instead of an exception, so the main
    process can name it."""

    def __init__(self, images: ImageSet, transform: Callable, decoder: str = "pil") -> None:
        self.images, self.transform, self.decoder = images, transform, decoder

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, row: int):
        try:
            if self.decoder == "torchvision":
                if self.images.file_names[row].lower().endswith(JPEG_SUFFIXES):
                    return self.images.path(row).read_bytes(), row, ""   # bytes cross processes cheaply
                return pil_to_tensor(self.images.load(row)), row, ""
            return self.transform(self.images.load(row)), row, ""
        except Exception as error:  # any decoder failure names the file
            return None, row, f"{type(error).__name__}: {error}"


JPEG_SUFFIXES = (".jpg", ".jpeg")


def _collate(items):
    good = [(x, row) for x, row, err in items if not err]
    bad = [(row, err) for _x, row, err in items if err]
    # Pillow-decoded images stack into a batch; the torchvision decoder's
    # items (JPEG bytes, tensors of other sizes) stay a list.
    if good and isinstance(good[0][0], torch.Tensor) and good[0][0].is_floating_point():
        batch = torch.stack([x for x, _ in good])
    else:
        batch = [x for x, _ in good] if good else None
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


def decode_batch(items: list, transform: Callable,
                 device: torch.device) -> tuple[torch.Tensor | None, list[tuple[int, str]]]:
    """torchvision decoding: the batch's JPEGs decoded together on ``device``
    (nvJPEG on a GPU); a JPEG the device decoder refuses (CMYK, say) is
    decoded by Pillow instead; other formats arrive decoded by Pillow in the
    workers. Then the transform runs on the tensors.

    Returns:
        The batch of the images that decoded (None if none did), and
        ``(position, error)`` for each JPEG that neither decoder could read.
    """
    from torchvision.io import ImageReadMode, decode_jpeg
    decoded = [x.to(device) if isinstance(x, torch.Tensor) else None for x in items]
    jpeg = [i for i, x in enumerate(items) if isinstance(x, bytes)]
    failed: list[tuple[int, str]] = []
    data = {i: torch.frombuffer(bytearray(items[i]), dtype=torch.uint8) for i in jpeg}
    try:
        for i, image in zip(jpeg, decode_jpeg([data[i] for i in jpeg], device=device,
                                              mode=ImageReadMode.RGB)):
            decoded[i] = image
    except RuntimeError:   # one image the device decoder cannot take fails the whole batch
        for i in jpeg:
            try:
                decoded[i] = decode_jpeg(data[i], device=device, mode=ImageReadMode.RGB)
            except RuntimeError:
                try:
                    with Image.open(io.BytesIO(items[i])) as image:
                        decoded[i] = pil_to_tensor(image.convert("RGB")).to(device)
                except Exception as error:  # any decoder failure names the file
                    failed.append((i, f"{type(error).__name__}: {error}"))
    good = [image for image in decoded if image is not None]
    if not good:
        return None, failed
    try:
        return torch.stack([transform(image) for image in good]), failed
    except (TypeError, AttributeError) as error:
        raise BadOptionError("--decoder torchvision needs a transform that takes image tensors "
                        f"(torchvision's weights transforms do): {error}") from error
