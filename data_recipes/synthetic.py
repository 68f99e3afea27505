"""Procedural visual-maths generator: pictures drawn with PIL whose answers are computed exactly.

Tasks (each in three difficulty levels; the level is stored in `difficulty["level"]`):

  triangle_angle  L1 two angles of a triangle given -> the third; L2 an angle and an exterior angle ->
                  a remote interior angle; L3 isosceles triangle (tick marks) with its apex angle -> a base angle
  shape_area      L1 rectangle; L2 right triangle (may give .5); L3 trapezoid, or a circle (answer "k\\pi")
  count           L1 circles of one colour; L2 one colour+shape among distractors; L3 two shapes in total
  bar_chart       L1 read one bar; L2 difference of two bars; L3 total of all bars
  clock           L1 on the hour; L2 quarter hours; L3 five-minute steps (answer "H:MM", 12-hour)

Row `index` of seed `seed` depends on nothing else, so any size and any slice is reproducible:
tasks cycle with the index, levels cycle every len(tasks) rows. Every row keeps the parameters it was
drawn from in meta["spec"], and `solve(task, spec)` recomputes the answer from them alone (the tests
also re-measure counts and bar heights from the pixels). Worked solutions ending in \\boxed{answer}
are included unless --no-solutions (for the supervised / CHORD term). The drawings are faithful:
triangles are built from their angles and shapes from their side lengths, at a common scale.

    python -m data_recipes.synthetic --out data/procedural --size 5000 --seed 0 --levels 1,2
    spark-vl data prepare synthetic --out data/procedural --tasks clock,bar_chart

The small built-in set used by the CPU demo (colour / count / compare / shape) stays in
spark_vl/data/synthetic.py; this file reuses its colours and shape drawing.
"""

from __future__ import annotations

import functools
import math
import random
import sys
from fractions import Fraction
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from spark_vl.data.synthetic import COLORS, _draw_shape
from spark_vl.prep.recipes import Recipe, run
from spark_vl.types import Sample

TASKS = ("triangle_angle", "shape_area", "count", "bar_chart", "clock")
LEVELS = (1, 2, 3)
INK = (20, 20, 20)
BAR = (60, 110, 190)
FRUITS = ("apples", "pears", "plums", "figs", "kiwis", "limes", "dates")
COUNT_SHAPES = ("circle", "square", "triangle")


@functools.lru_cache(maxsize=8)
def font(px: int):
    try:
        return ImageFont.load_default(size=px)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def number(value: Fraction | int | float) -> str:
    """Exact value as the shortest string: 7, 7.5, -3."""
    value = Fraction(value).limit_denominator(1000)
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):g}"


def _text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, px: int) -> None:
    draw.text(xy, text, fill=INK, font=font(px), anchor="mm")


# ----------------------------------------------------------------------------------------- geometry


def _fit(points: dict[str, tuple[float, float]], size: int, margin: float) -> dict[str, tuple[float, float]]:
    """Scale math coordinates (y up) into the image (y down), centred, keeping proportions."""
    xs, ys = [p[0] for p in points.values()], [p[1] for p in points.values()]
    span = max(max(xs) - min(xs), max(ys) - min(ys), 1e-9)
    scale = (size - 2 * margin) / span
    cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    return {k: (size / 2 + (x - cx) * scale, size / 2 - (y - cy) * scale) for k, (x, y) in points.items()}


def _triangle(left: float, right: float) -> dict[str, tuple[float, float]]:
    """Vertices L, R, T of a triangle with base LR = 1 and the given base angles (degrees)."""
    apex = 180 - left - right
    side = math.sin(math.radians(right)) / math.sin(math.radians(apex))  # law of sines: LT
    return {"L": (0.0, 0.0), "R": (1.0, 0.0),
            "T": (side * math.cos(math.radians(left)), side * math.sin(math.radians(left)))}


def _angle_mark(draw, at, p, q, label: str | None, size: int) -> None:
    """An arc at vertex `at` between rays to p and q, and the label inside the angle."""
    a1 = math.degrees(math.atan2(p[1] - at[1], p[0] - at[0]))
    a2 = math.degrees(math.atan2(q[1] - at[1], q[0] - at[0]))
    if (a2 - a1) % 360 > 180:
        a1, a2 = a2, a1
    r = size * 0.07
    draw.arc((at[0] - r, at[1] - r, at[0] + r, at[1] + r), a1, a1 + (a2 - a1) % 360, fill=INK, width=2)
    if label:
        mid = math.radians(a1 + ((a2 - a1) % 360) / 2)
        _text(draw, (at[0] + 2.3 * r * math.cos(mid), at[1] + 2.3 * r * math.sin(mid)), label, size // 16)


def _vertex_labels(draw, pts: dict[str, tuple[float, float]], names: dict[str, str], size: int) -> None:
    cx = sum(p[0] for p in pts.values()) / len(pts)
    cy = sum(p[1] for p in pts.values()) / len(pts)
    for key, name in names.items():
        x, y = pts[key]
        d = math.hypot(x - cx, y - cy) or 1.0
        _text(draw, (x + (x - cx) / d * size * 0.06, y + (y - cy) / d * size * 0.06), name, size // 14)


def _tick(draw, p, q, size: int) -> None:
    mx, my = (p[0] + q[0]) / 2, (p[1] + q[1]) / 2
    dx, dy = q[0] - p[0], q[1] - p[1]
    d = math.hypot(dx, dy) or 1.0
    nx, ny = -dy / d * size * 0.025, dx / d * size * 0.025
    draw.line((mx - nx, my - ny, mx + nx, my + ny), fill=INK, width=2)


def triangle_angle(rng: random.Random, level: int, size: int) -> dict[str, Any]:
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    if level == 3:
        apex = rng.randrange(20, 141, 2)
        base = (180 - apex) // 2
        pts = _fit(_triangle(base, base), size, size * 0.18)
        spec = {"kind": "isosceles", "A": apex}
        names = {"T": "A", "L": "B", "R": "C"}
        _angle_mark(draw, pts["T"], pts["L"], pts["R"], f"{apex}°", size)
        draw.polygon([pts["L"], pts["R"], pts["T"]], outline=INK, width=2)
        _tick(draw, pts["T"], pts["L"], size)
        _tick(draw, pts["T"], pts["R"], size)
        question = "In triangle ABC, sides with a tick mark are equal. What is the measure of angle B in degrees?"
    else:
        a = rng.randint(25, 95)
        b = rng.randint(25, 150 - a)
        math_pts = _triangle(a, b)
        if level == 2:  # extend BC beyond C to D: the exterior angle ACD equals A + B
            lx, ly = math_pts["R"]
            tx, ty = math_pts["T"]
            math_pts["D"] = (tx + (tx - lx) * 0.45, ty + (ty - ly) * 0.45)
        pts = _fit(math_pts, size, size * 0.16)
        names = {"L": "A", "R": "B", "T": "C"}
        draw.polygon([pts["L"], pts["R"], pts["T"]], outline=INK, width=2)
        _angle_mark(draw, pts["L"], pts["R"], pts["T"], f"{a}°", size)
        if level == 1:
            spec = {"kind": "interior", "A": a, "B": b}
            _angle_mark(draw, pts["R"], pts["L"], pts["T"], f"{b}°", size)
            question = "What is the measure of angle C of triangle ABC, in degrees?"
        else:
            spec = {"kind": "exterior", "A": a, "ext_C": a + b}
            draw.line((*pts["T"], *pts["D"]), fill=INK, width=2)
            _angle_mark(draw, pts["T"], pts["D"], pts["L"], f"{a + b}°", size)
            names["D"] = "D"
            question = "Side BC of triangle ABC is extended to D. What is the measure of angle B in degrees?"
    _vertex_labels(draw, pts, names, size)
    return {"image": img, "question": question, "spec": spec}


# ----------------------------------------------------------------------------------------- areas


def shape_area(rng: random.Random, level: int, size: int) -> dict[str, Any]:
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    px = size // 15
    if level == 1:
        w, h = rng.randint(2, 15), rng.randint(2, 15)
        pts = _fit({"a": (0, 0), "b": (w, 0), "c": (w, h), "d": (0, h)}, size, size * 0.2)
        draw.polygon([pts["a"], pts["b"], pts["c"], pts["d"]], outline=INK, width=2)
        _text(draw, ((pts["a"][0] + pts["b"][0]) / 2, pts["a"][1] + px * 1.2), f"{w} cm", px)
        _text(draw, (pts["b"][0] + px * 2, (pts["b"][1] + pts["c"][1]) / 2), f"{h} cm", px)
        return {"image": img, "question": "What is the area of the rectangle in square centimetres?",
                "spec": {"kind": "rectangle", "w": w, "h": h}}
    if level == 2:
        a, b = rng.randint(2, 15), rng.randint(2, 15)
        pts = _fit({"o": (0, 0), "x": (a, 0), "y": (0, b)}, size, size * 0.2)
        draw.polygon([pts["o"], pts["x"], pts["y"]], outline=INK, width=2)
        s = size * 0.04
        o = pts["o"]
        draw.line((o[0] + s, o[1], o[0] + s, o[1] - s, o[0], o[1] - s), fill=INK, width=2)  # right-angle mark
        _text(draw, ((o[0] + pts["x"][0]) / 2, o[1] + px * 1.2), f"{a} cm", px)
        _text(draw, (o[0] - px * 2, (o[1] + pts["y"][1]) / 2), f"{b} cm", px)
        return {"image": img, "question": "What is the area of the right triangle in square centimetres?",
                "spec": {"kind": "right_triangle", "a": a, "b": b}}
    if rng.random() < 0.5:
        r = rng.randint(1, 12)
        c, rad = size / 2, size * 0.35
        draw.ellipse((c - rad, c - rad, c + rad, c + rad), outline=INK, width=2)
        draw.line((c, c, c + rad, c), fill=INK, width=2)
        draw.ellipse((c - 3, c - 3, c + 3, c + 3), fill=INK)
        _text(draw, (c + rad / 2, c - px), f"{r} cm", px)
        return {"image": img, "question": "What is the area of the circle in square centimetres? Give the exact "
                "value in terms of pi.", "spec": {"kind": "circle", "r": r}}
    bottom, top, h = rng.randint(6, 16), rng.randint(2, 10), rng.randint(2, 12)
    top = min(top, bottom - 1)
    shift = (bottom - top) / 2
    pts = _fit({"a": (0, 0), "b": (bottom, 0), "c": (shift + top, h), "d": (shift, h)}, size, size * 0.2)
    draw.polygon([pts["a"], pts["b"], pts["c"], pts["d"]], outline=INK, width=2)
    foot = (pts["d"][0], pts["a"][1])
    for k in range(0, 20, 2):  # dashed height
        y0 = pts["d"][1] + (foot[1] - pts["d"][1]) * k / 20
        y1 = pts["d"][1] + (foot[1] - pts["d"][1]) * (k + 1) / 20
        draw.line((foot[0], y0, foot[0], y1), fill=INK, width=1)
    _text(draw, ((pts["a"][0] + pts["b"][0]) / 2, pts["a"][1] + px * 1.2), f"{bottom} cm", px)
    _text(draw, ((pts["c"][0] + pts["d"][0]) / 2, pts["d"][1] - px * 1.2), f"{top} cm", px)
    _text(draw, (foot[0] + px * 1.8, (pts["d"][1] + foot[1]) / 2), f"{h} cm", px)
    return {"image": img, "question": "The two horizontal sides of the trapezoid are parallel. What is its area in "
            "square centimetres?", "spec": {"kind": "trapezoid", "a": bottom, "b": top, "h": h}}


# ----------------------------------------------------------------------------------------- counting


def count(rng: random.Random, level: int, size: int) -> dict[str, Any]:
    grid = 3 if level == 1 else 4
    colours = sorted(COLORS)
    cells = rng.sample(range(grid * grid), rng.randint(2, grid * grid - 1) if level > 1 else rng.randint(1, 6))
    if level == 1:
        colour = rng.choice(colours)
        objects = [{"shape": "circle", "colour": colour, "cell": c} for c in cells]
        target = {"shapes": ["circle"], "colour": colour}
        question = "How many circles are in the image?"
    else:
        objects = [{"shape": rng.choice(COUNT_SHAPES), "colour": rng.choice(colours), "cell": c} for c in cells]
        if level == 2:
            pick = rng.choice(objects)
            target = {"shapes": [pick["shape"]], "colour": pick["colour"]}
            question = f"How many {pick['colour']} {pick['shape']}s are in the image?"
        else:
            shapes = rng.sample(COUNT_SHAPES, 2)
            target = {"shapes": shapes, "colour": None}
            question = f"How many {shapes[0]}s and {shapes[1]}s are there in total?"
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    cell = size // grid
    pad = max(3, cell // 8)
    for obj in objects:
        x, y = (obj["cell"] % grid) * cell, (obj["cell"] // grid) * cell
        _draw_shape(draw, obj["shape"], (x + pad, y + pad, x + cell - pad, y + cell - pad), COLORS[obj["colour"]])
    return {"image": img, "question": question, "spec": {"grid": grid, "objects": objects, "target": target}}


# ----------------------------------------------------------------------------------------- bar chart


def bar_chart(rng: random.Random, level: int, size: int) -> dict[str, Any]:
    n = rng.randint(3, 4) if level == 1 else rng.randint(4, 6)
    names = rng.sample(FRUITS, n)
    step = rng.choice((1, 2, 5, 10))
    values = [step * rng.randint(1, 8) for _ in range(n)]
    top = step * 9
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    px = size // 20
    x0, x1, y0, y1 = size * 0.16, size * 0.96, size * 0.84, size * 0.08  # plot box (y0 = zero line)
    per_unit = (y0 - y1) / top
    for k in range(0, 10):  # grid and tick labels every step
        y = y0 - k * step * per_unit
        draw.line((x0, y, x1, y), fill=(215, 215, 215), width=1)
        _text(draw, (x0 - px * 1.4, y), str(k * step), px)
    draw.line((x0, y0, x1, y0), fill=INK, width=2)
    draw.line((x0, y0, x0, y1), fill=INK, width=2)
    slot = (x1 - x0) / n
    centres = []
    for i, (name, value) in enumerate(zip(names, values, strict=True)):
        cx = x0 + slot * (i + 0.5)
        centres.append(round(cx))
        draw.rectangle((round(cx - slot * 0.3), round(y0 - value * per_unit), round(cx + slot * 0.3), round(y0) - 1),
                       fill=BAR)
        _text(draw, (cx, y0 + px * 1.1), name, px)
    spec = {"names": names, "values": values, "step": step,
            "axis": {"zero_y": round(y0), "px_per_unit": per_unit, "centres": centres}}
    if level == 1:
        spec["ask"] = {"op": "value", "of": rng.choice(names)}
        question = f"According to the bar chart, how many {spec['ask']['of']} are there?"
    elif level == 2:
        a, b = sorted(rng.sample(names, 2), key=lambda name: -values[names.index(name)])
        spec["ask"] = {"op": "difference", "of": [a, b]}
        question = f"How many more {a} than {b} are there?"
    else:
        spec["ask"] = {"op": "total"}
        question = "What is the total of all the bars in the chart?"
    return {"image": img, "question": question, "spec": spec}


# ----------------------------------------------------------------------------------------- clock


def clock(rng: random.Random, level: int, size: int) -> dict[str, Any]:
    hour = rng.randint(1, 12)
    minute = {1: 0, 2: rng.choice((0, 15, 30, 45)), 3: 5 * rng.randint(0, 11)}[level]
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    c, r = size / 2, size * 0.44
    draw.ellipse((c - r, c - r, c + r, c + r), outline=INK, width=3)
    for k in range(60):
        a = math.radians(k * 6 - 90)
        inner = r * (0.86 if k % 5 == 0 else 0.93)
        draw.line((c + inner * math.cos(a), c + inner * math.sin(a), c + r * math.cos(a), c + r * math.sin(a)),
                  fill=INK, width=2 if k % 5 == 0 else 1)
    for h in range(1, 13):
        a = math.radians(h * 30 - 90)
        _text(draw, (c + r * 0.72 * math.cos(a), c + r * 0.72 * math.sin(a)), str(h), size // 14)
    hour_angle = math.radians((hour % 12 + minute / 60) * 30 - 90)
    minute_angle = math.radians(minute * 6 - 90)
    draw.line((c, c, c + r * 0.5 * math.cos(hour_angle), c + r * 0.5 * math.sin(hour_angle)), fill=INK, width=6)
    draw.line((c, c, c + r * 0.82 * math.cos(minute_angle), c + r * 0.82 * math.sin(minute_angle)), fill=INK, width=3)
    draw.ellipse((c - 5, c - 5, c + 5, c + 5), fill=INK)
    question = "What time does the clock show? Answer as H:MM on a 12-hour clock (for example 3:05)."
    return {"image": img, "question": question, "spec": {"hour": hour, "minute": minute}}


# ----------------------------------------------------------------------------------------- answers


def solve(task: str, spec: dict[str, Any]) -> str:
    """The exact answer from the drawing parameters alone (independent of how the picture was made)."""
    if task == "triangle_angle":
        kind = spec["kind"]
        if kind == "interior":
            return number(180 - spec["A"] - spec["B"])
        if kind == "exterior":
            return number(spec["ext_C"] - spec["A"])
        return number(Fraction(180 - spec["A"], 2))
    if task == "shape_area":
        kind = spec["kind"]
        if kind == "rectangle":
            return number(spec["w"] * spec["h"])
        if kind == "right_triangle":
            return number(Fraction(spec["a"] * spec["b"], 2))
        if kind == "trapezoid":
            return number(Fraction((spec["a"] + spec["b"]) * spec["h"], 2))
        return f"{spec['r'] ** 2}\\pi"
    if task == "count":
        target = spec["target"]
        return str(sum(1 for o in spec["objects"] if o["shape"] in target["shapes"]
                       and (target["colour"] is None or o["colour"] == target["colour"])))
    if task == "bar_chart":
        value = dict(zip(spec["names"], spec["values"], strict=True))
        ask = spec["ask"]
        if ask["op"] == "value":
            return number(value[ask["of"]])
        if ask["op"] == "difference":
            return number(value[ask["of"][0]] - value[ask["of"][1]])
        return number(sum(spec["values"]))
    if task == "clock":
        return f"{spec['hour']}:{spec['minute']:02d}"
    raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")


def worked_solution(task: str, spec: dict[str, Any], answer: str) -> str:
    if task == "triangle_angle":
        if spec["kind"] == "interior":
            text = f"The angles of a triangle add up to 180°, so C = 180° - {spec['A']}° - {spec['B']}° = {answer}°."
        elif spec["kind"] == "exterior":
            text = (f"An exterior angle equals the sum of the two remote interior angles: {spec['ext_C']}° = "
                    f"{spec['A']}° + B, so B = {answer}°.")
        else:
            text = (f"AB = AC, so the base angles B and C are equal: B = (180° - {spec['A']}°) / 2 = {answer}°.")
    elif task == "shape_area":
        kind = spec["kind"]
        text = {
            "rectangle": lambda: f"Area = width x height = {spec['w']} x {spec['h']} = {answer} cm².",
            "right_triangle": lambda: f"Area = 1/2 x {spec['a']} x {spec['b']} = {answer} cm².",
            "trapezoid": lambda: f"Area = (a + b) / 2 x h = ({spec['a']} + {spec['b']}) / 2 x {spec['h']} = "
            f"{answer} cm².",
            "circle": lambda: f"Area = pi r² = pi x {spec['r']}² = {answer} cm².",
        }[kind]()
    elif task == "count":
        target = spec["target"]
        what = " and ".join(f"{s}s" for s in target["shapes"])
        colour = f"{target['colour']} " if target["colour"] else ""
        text = f"Going cell by cell, there are {answer} {colour}{what} in the picture."
    elif task == "bar_chart":
        ask = spec["ask"]
        value = dict(zip(spec["names"], spec["values"], strict=True))
        if ask["op"] == "value":
            text = f"The {ask['of']} bar reaches {answer} on the axis."
        elif ask["op"] == "difference":
            a, b = ask["of"]
            text = f"{a}: {value[a]}, {b}: {value[b]}; {value[a]} - {value[b]} = {answer}."
        else:
            text = " + ".join(str(v) for v in spec["values"]) + f" = {answer}."
    else:
        text = (f"The short hand is at {spec['hour']} (or just past it) and the long hand points at minute "
                f"{spec['minute']}, so the time is {answer}.")
    return f"{text} \\boxed{{{answer}}}"


DRAW = {"triangle_angle": triangle_angle, "shape_area": shape_area, "count": count, "bar_chart": bar_chart,
        "clock": clock}


def answer_type(task: str, answer: str) -> str:
    if task == "clock":
        return "text"
    if answer.endswith("\\pi"):
        return "expression"
    return "integer" if answer.lstrip("-").isdigit() else "float"


def procedural_sample(index: int, seed: int = 0, tasks=TASKS, levels=LEVELS, image_size: int = 256,
                      solutions: bool = True) -> Sample:
    """Row `index` for `seed` (deterministic)."""
    unknown = [t for t in tasks if t not in DRAW]
    if unknown or not tasks:
        raise ValueError(f"unknown task(s) {unknown}; known: {', '.join(TASKS)}")
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad or not levels:
        raise ValueError(f"unknown level(s) {bad}; known: {LEVELS}")
    task = tasks[index % len(tasks)]
    level = levels[(index // len(tasks)) % len(levels)]
    rng = random.Random(f"spark-vl-procedural/{seed}/{index}")
    drawn = DRAW[task](rng, level, image_size)
    answer = solve(task, drawn["spec"])
    return Sample(
        uid=f"procedural-{seed}-{index}",
        problem=f"<image>{drawn['question']}",
        answer=answer,
        images=[drawn["image"]],
        answer_type=answer_type(task, answer),
        source="procedural",
        category=task,
        answer_raw=answer,
        solution=worked_solution(task, drawn["spec"], answer) if solutions else None,
        difficulty={"level": float(level)},
        meta={"task": task, "level": level, "seed": seed, "index": index, "spec": drawn["spec"]},
    )


def procedural_samples(n: int, seed: int = 0, start: int = 0, **kwargs) -> list[Sample]:
    return [procedural_sample(i, seed, **kwargs) for i in range(start, start + n)]


def add_arguments(parser) -> None:
    parser.add_argument("--size", type=int, default=1000, help="rows to generate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="first row index (disjoint splits: another start)")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {','.join(TASKS)}")
    parser.add_argument("--levels", default="1,2,3", help="comma-separated difficulty levels")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--no-solutions", action="store_true", help="leave out the worked solutions")


def generate(args):
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    levels = tuple(int(v) for v in args.levels.split(",") if v.strip())
    for i in range(args.start, args.start + args.size):
        yield procedural_sample(i, args.seed, tasks, levels, args.image_size, not args.no_solutions)


RECIPE = Recipe(
    name="synthetic",
    description="Procedural geometry / counting / chart / clock problems with exact answers.",
    licence="Apache-2.0 (generated by spark-vl)",
    convert=None,
    generate=generate,
    add_arguments=add_arguments,
)

if __name__ == "__main__":
    sys.exit(run(RECIPE, prog="python -m data_recipes.synthetic"))
