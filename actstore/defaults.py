"""Defaults users may tune, in one place, each with the reason for its value."""

# Rows per chunk along the image axis. Small enough that reading a handful of
# random images touches little data, large enough that a chunk of a linear
# layer is not a few kilobytes. Shards of a multi-process run align to it.
CHUNK_IMAGES = 16

# Upper bound on one chunk's raw size. Conv layers whose CHUNK_IMAGES rows
# exceed it are also split along channels (units), so that reading one channel
# across all images does not decompress whole feature maps.
CHUNK_BYTES = 4 * 2**20

# Blosc-zstd at level 3 with byte shuffle: fast on several cores and it
# shrinks ReLU outputs (many exact zeros) well. See README "Compression".
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3

BATCH_SIZE = 64
NUM_WORKERS = 2

# Finished batches waiting for the writer. The model blocks only when this
# many batches are queued, which bounds memory to a few batches.
WRITE_QUEUE_BATCHES = 4
