"""The small CLI budget shared by the pipeline end-to-end tests (tiny and other architectures)."""
from __future__ import annotations

import os

# one epoch, 12 train / 4 val frames of 32x64; the teacher gets 15 quick epochs and tau is
# 0.5 so that it labels some pixels and leaves others void
SMALL = ["--set", "train.epochs=1", "--set", "train.batch_size=4",
         "--set", "data.synth.count=16", "--set", "data.synth.size=[32,64]",
         "--set", "stages.split.depth=12", "--set", "stages.split.segmentation=4",
         "--set", "stages.teacher.train.epochs=15", "--set", "stages.teacher.train.lr=0.01",
         "--set", "stages.pseudo.tau=0.5"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
