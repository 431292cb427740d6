"""SIGTERM at random points (issue 23): each stop keeps its rows, and the resume equals an uninterrupted run.

Slurm's ``scancel`` and time limit send SIGTERM to every process of the job
step (``--signal=TERM@120`` sends it 120 s before the limit). This sends it
(to the process group, DataLoader workers included) ``--stops`` times per
format, each at a random moment after a new row has landed, to AlexNet
extractions of 450 generated images; each run must end with status 143 and
one line naming the rows kept, and the final resume must equal an
uninterrupted run bit for bit. The checks are the test suite's
(``tests/test_trust_run.py``, which sends three signals).

    python benchmarks/bench_sigterm.py            # 10 SIGTERMs per format (a few minutes on 2 cores)
"""
from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, machine

sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "extract")]

from conftest import make_images, save_random_weights  # noqa: E402
from test_resume import reference  # noqa: E402
from test_trust_run import stop_at_random_points  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stops", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="actstore-sigterm-") as scratch:
        root = Path(scratch)
        images = make_images(root / "in", "classes", per_class=150)
        weights = save_random_weights("alexnet", root / "alexnet.pth")
        expected = reference(weights, images, root / "ref.zarr")
        print(f"{machine()}; {args.stops} SIGTERMs per format, 450 images")
        for suffix in (".zarr", ".h5"):
            started = time.perf_counter()
            (root / suffix[1:]).mkdir()
            kept = stop_at_random_points(root / suffix[1:], images, weights, suffix,
                                         [signal.SIGTERM] * args.stops, expected, seed=len(suffix))
            print(f"{suffix}: {len(kept)} stops, rows kept at each: {kept}; every stop exited 143 with one line, "
                  f"the resume equals the uninterrupted run bit for bit ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
