"""What limited a run, and the option that would help: one line at its end."""
from __future__ import annotations

from typing import Mapping

# Below this many seconds in the batch loop a run is too short to tell (its
# setup and the first batches' warm-up dominate), and advice is not worth a line.
MIN_LOOP_SECONDS = 3.0
# A stage limits the run when the main loop spent at least this share waiting on it.
LIMIT_SHARE = 0.5
JPEG_SUFFIXES = (".jpg", ".jpeg")


def limit_hint(stages: Mapping[str, float], *, device_type: str, decoder: str, jpeg_share: float,
               num_workers: int, compression: str, dtype: str) -> str | None:
    """One line naming what limited a run and what would help, or None.

    ``stages`` are :class:`~actstore.extract.loop.StageClock`'s seconds: the
    main loop waits for decoded batches ("decode"), runs the model
    ("forward") and waits for the background writer ("write"). When decoding
    or writing takes at least ``LIMIT_SHARE`` of the loop, the model waited
    for it; a forward-bound run is as fast as its model and gets no line.
    Decode-bound on a GPU with mostly JPEGs (``jpeg_share``) and the PIL
    decoder: nvJPEG (``--decoder torchvision``); otherwise more decode
    processes. Write-bound: a faster codec or half the bytes, whichever the
    run does not use already.
    """
    loop = sum(stages.get(stage, 0.0) for stage in ("decode", "forward", "write"))
    if loop < MIN_LOOP_SECONDS:
        return None
    stage = max(("decode", "write"), key=lambda s: stages.get(s, 0.0))
    share = stages.get(stage, 0.0) / loop
    if share < LIMIT_SHARE:
        return None
    said = f"{'decoding images' if stage == 'decode' else 'writing'} took {share:.0%} of the batch loop"
    if stage == "decode":
        if device_type == "cuda" and decoder == "pil" and jpeg_share >= 0.5:
            return f"{said}: --decoder torchvision (JPEGs decoded on the GPU) would help"
        return f"{said}: more --num-workers (now {num_workers}) would help, if cores are free"
    helps = ([] if compression in ("lz4", "none") else ["--compression lz4"]) + \
        (["--dtype float16"] if dtype == "float32" else [])
    if not helps:
        return f"{said}, already with --compression {compression} and --dtype {dtype}: the disk is the limit"
    return f"{said}: {' or '.join(helps)} would help"


def jpeg_share(file_names: tuple[str, ...]) -> float:
    """The share of ``file_names`` that are JPEGs (what nvJPEG decodes)."""
    if not file_names:
        return 0.0
    return sum(name.lower().endswith(JPEG_SUFFIXES) for name in file_names) / len(file_names)
