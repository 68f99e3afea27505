"""Peak memory of huge-but-tiny image files on their way to the model (docs/RELIABILITY.md, item 5).

    python scripts/bench_image_memory.py            # 1 and 4 images of 9000 x 9000 (a 21 kB PNG each)

Each measurement runs in a fresh process: build the training prompts (`PromptBuilder`, which decodes the images)
and encode them with the processor (`PromptEncoder`, the path of generation and the update), keep them alive as a
step does, and report the peak resident memory (ru_maxrss) above the process's size after its imports.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import resource, sys, json
from pathlib import Path
from PIL import Image
from spark_vl.config import load_config
from spark_vl.models.encode import PromptEncoder
from spark_vl.models.tiny import build_processor
from spark_vl.trainer.data import PromptBuilder
from spark_vl.types import Sample

folder, n = Path(sys.argv[1]), int(sys.argv[2])
cfg = load_config(None, ["model.max_pixels=1048576", "data.max_prompt_length=100000"])
processor = build_processor("tiny-qwen2.5-vl", cfg.model.min_pixels, cfg.model.max_pixels)
build, encode = PromptBuilder(cfg, processor), PromptEncoder(processor)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kept = []
for i in range(n):
    prompt = build(Sample(uid=f"u{i}", problem="<image>What colour?", answer="red", images=["huge.png"]), folder)
    kept.append((prompt, encode(prompt)))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"images": n, "peak_mib": (peak - base) / 1024, "kept_size": list(kept[0][0].images[0].size)}))
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        from PIL import Image

        Image.new("RGB", (9000, 9000), "red").save(Path(tmp) / "huge.png")
        size_kb = (Path(tmp) / "huge.png").stat().st_size / 1024
        print(f"9000 x 9000 PNG: {size_kb:.0f} kB on disk")
        for n in (1, 4):
            out = subprocess.run([sys.executable, "-c", CHILD, tmp, str(n)], capture_output=True, text=True,
                                 check=True).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            print(f"{r['images']} image(s) in flight: peak +{r['peak_mib']:.0f} MiB; kept image {r['kept_size']}")


if __name__ == "__main__":
    main()
