"""The built-in synthetic dataset: small pictures drawn with PIL whose answers are known exactly.

Rows are generated from (seed, index) alone, so any split of any size is reproducible without files:
`synthetic_samples(n, seed=0, start=0)` gives rows start..start+n-1. The trainer's held-out split uses
indices past the training range. Tasks (each row picks one, cycling through `tasks`):

  color    one filled shape; "What colour is the shape?"                 -> a colour word (text)
  count    1-5 circles;      "How many circles are in the image?"        -> an integer
  compare  two squares;      "Which square is larger, left or right?"    -> "left" / "right" (text)
  shape    one shape;        "Which shape is shown?" with 3 choices      -> a letter (mcq_letter)

Every row carries a short worked `solution` ending in \\boxed{answer}, used by the supervised term.
The procedural generator for real experiments (geometry, charts, clocks) lives in data_recipes/synthetic.py.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from spark_vl.types import Sample

COLORS = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 70, 220),
    "yellow": (235, 200, 20),
    "purple": (140, 50, 170),
}
SHAPES = ("circle", "square", "triangle")
TASKS = ("color", "count", "compare", "shape")


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, box: tuple[int, int, int, int], fill) -> None:
    x0, y0, x1, y1 = box
    if kind == "circle":
        draw.ellipse(box, fill=fill)
    elif kind == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)


def _color(rng: random.Random, size: int) -> tuple[Image.Image, str, str, str]:
    name = rng.choice(sorted(COLORS))
    kind = rng.choice(SHAPES)
    img = Image.new("RGB", (size, size), "white")
    margin = rng.randint(2, size // 5)
    _draw_shape(ImageDraw.Draw(img), kind, (margin, margin, size - margin, size - margin), COLORS[name])
    return img, "What colour is the shape?", name, f"The {kind} is {name}."


def _count(rng: random.Random, size: int) -> tuple[Image.Image, str, str, str]:
    k = rng.randint(1, 5)
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    cell = size // 3
    cells = rng.sample(range(9), k)  # one circle per 3x3 grid cell, so circles never overlap
    for c in cells:
        x, y = (c % 3) * cell, (c // 3) * cell
        _draw_shape(draw, "circle", (x + 2, y + 2, x + cell - 3, y + cell - 3), COLORS[rng.choice(sorted(COLORS))])
    return img, "How many circles are in the image?", str(k), f"I count {k} circle{'s' if k > 1 else ''}."


def _compare(rng: random.Random, size: int) -> tuple[Image.Image, str, str, str]:
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    half = size // 2
    big, small = rng.randint(half * 3 // 4, half - 2), rng.randint(3, half // 3)
    larger = rng.choice(["left", "right"])
    sides = {"left": big if larger == "left" else small, "right": big if larger == "right" else small}
    fill = COLORS[rng.choice(sorted(COLORS))]
    for i, side in enumerate(("left", "right")):
        s = sides[side]
        cx, cy = i * half + half // 2, size // 2
        draw.rectangle((cx - s // 2, cy - s // 2, cx + s // 2, cy + s // 2), fill=fill)
    question = "Which square is larger, the left or the right one? Answer left or right."
    return img, question, larger, f"The {larger} square is larger."


def _shape(rng: random.Random, size: int) -> tuple[Image.Image, str, str, str, list[str]]:
    kind = rng.choice(SHAPES)
    img = Image.new("RGB", (size, size), "white")
    m = rng.randint(2, size // 5)
    _draw_shape(ImageDraw.Draw(img), kind, (m, m, size - m, size - m), COLORS[rng.choice(sorted(COLORS))])
    choices = list(SHAPES)
    rng.shuffle(choices)
    letter = "ABC"[choices.index(kind)]
    options = "\n".join(f"({'ABC'[i]}) {c}" for i, c in enumerate(choices))
    return img, f"Which shape is shown?\n{options}", letter, f"The picture shows a {kind}.", choices


def synthetic_sample(index: int, seed: int = 0, tasks: tuple[str, ...] | list[str] = TASKS, image_size: int = 56):
    """Row `index` of the synthetic dataset for `seed` (deterministic)."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown synthetic task(s) {unknown}; known: {', '.join(TASKS)}")
    task = tasks[index % len(tasks)]
    rng = random.Random(f"spark-vl-synthetic/{seed}/{index}")
    choices = None
    if task == "shape":
        img, question, answer, reason, choices = _shape(rng, image_size)
        answer_type = "mcq_letter"
    else:
        img, question, answer, reason = {"color": _color, "count": _count, "compare": _compare}[task](rng, image_size)
        answer_type = "integer" if task == "count" else "text"
    return Sample(
        uid=f"synthetic-{seed}-{index}",
        problem=f"<image>{question}",
        answer=answer,
        images=[img],
        choices=choices,
        answer_type=answer_type,
        source="builtin:synthetic",
        category=task,
        answer_raw=answer,
        solution=f"{reason} \\boxed{{{answer}}}",
    )


def synthetic_samples(
    n: int, seed: int = 0, start: int = 0, tasks: tuple[str, ...] | list[str] = TASKS, image_size: int = 56
) -> list[Sample]:
    """Rows start..start+n-1 of the synthetic dataset."""
    return [synthetic_sample(i, seed, tasks, image_size) for i in range(start, start + n)]
