"""A synthetic captioned image corpus for pretraining the demo's small CLIP (rule ``pretrain``).

Images come from generators related to the demo's evaluation datasets (ordclip/data/synthetic.py)
but drawn with other seeds and other settings: named colours and other shape sizes for counting,
fading and blur levels jittered between the evaluation's exact steps, scenes with other numbers of
shapes, light and dark backgrounds, and combinations (counted shapes that are also faded or
blurred). Each image keeps its attributes; a caption is drawn from templates that name what is
visible, each time the image is used, so the text tower sees many wordings of one image:

    "a photo of three red circles."        "the number of shapes is 3."
    "a slightly faded photo of two squares."   "this photo is very blurry."

Numbers appear as digits and as words. A caption also names attributes other than the one a
template is about (colour, shape, background, fading, blur): the model must read the right one.
The templates include the demo's zero-shot sentences ("{context} {rank name}.", params.yaml
``datasets.<name>.prompt`` and ``rank_names``) in the same form.

Every image is drawn from its own generator seeded by (corpus seed, family, index), a seed sequence
of three numbers where the evaluation datasets use two (dataset seed, index): no evaluation image is
ever drawn again here, and tests/test_pretrain.py checks it on the images' hashes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

NUMBER_WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
# the demo's rank names (params.yaml datasets.fading / datasets.blur), level 0 .. 4
FADE_WORDS = ["vivid", "slightly faded", "faded", "very faded", "completely faded"]
BLUR_WORDS = ["sharp", "slightly blurry", "blurry", "very blurry", "extremely blurry"]
COLOURS = {  # named colours of the counted shapes (the evaluation draws random bright colours)
    "red": (225, 45, 45), "green": (50, 200, 70), "blue": (60, 90, 230), "yellow": (235, 220, 50),
    "white": (240, 240, 240), "orange": (245, 150, 40), "purple": (170, 70, 210), "pink": (245, 140, 190),
    "cyan": (60, 220, 225),
}
SHAPES = {"circle": "circles", "square": "squares"}
FAMILIES = ("count", "fade", "blur", "combined")

log = logging.getLogger(__name__)


@dataclass
class Corpus:
    """Images (N, px, px, 3) uint8 at the backbone's cache size, their attributes, and the sha256
    of every image as generated (before resizing), for the leakage check."""

    images: np.ndarray
    attributes: list[dict]
    hashes: list[str] = field(default_factory=list)


def image_hash(img: Image.Image | np.ndarray) -> str:
    """sha256 of an RGB image's uint8 pixels and shape (the same for a PNG and its decoded array)."""
    arr = np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
    return hashlib.sha256(str(arr.shape).encode() + arr.tobytes()).hexdigest()


# --- images ---------------------------------------------------------------------------------------

def _background(rng: np.random.Generator, size: int, light: bool) -> Image.Image:
    """A noisy plain background: dark (as the evaluation's) or light (a setting it never uses)."""
    base = rng.integers(0, 256, size=3) * 0.3 + (170 if light else 15)
    noise = rng.normal(0, rng.uniform(3, 12), size=(size, size, 3))
    return Image.fromarray(np.clip(base[None, None, :] + noise, 0, 255).astype(np.uint8), "RGB")


def _shapes(rng: np.random.Generator, size: int, n: int, light_bg: bool) -> tuple[Image.Image, dict]:
    """``n`` separated shapes of one kind (or mixed) and one named colour (or several)."""
    img = _background(rng, size, light_bg)
    draw = ImageDraw.Draw(img)
    kind = ["circle", "square", "mixed"][int(rng.integers(0, 3))]
    names = list(COLOURS)
    colour = names[int(rng.integers(0, len(names)))] if rng.random() < 0.75 else "mixed"
    if light_bg and colour in ("white", "yellow", "cyan"):
        colour = "red"  # a pale shape on a light background would be hard to see
    margin, placed, radius = size // 12 + 1, [], max(2, size // 24)
    for _ in range(100_000):  # ten shapes fit easily from 64 px (the schema's minimum image size)
        if len(placed) == n:
            break
        r = int(rng.integers(radius, radius + 4))
        x, y = rng.integers(margin + r, size - margin - r, size=2)
        if all(max(abs(x - px), abs(y - py)) > r + pr + 2 for px, py, pr in placed):
            placed.append((int(x), int(y), r))
    if len(placed) < n:
        raise ValueError(f"cannot place {n} separated shapes on {size} px")
    for x, y, r in placed:
        if colour == "mixed":
            rgb = tuple(int(c) for c in np.asarray(COLOURS[names[int(rng.integers(0, len(names)))]]))
        else:
            rgb = COLOURS[colour]
        rgb = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in rgb)
        shape = kind if kind != "mixed" else ("circle" if rng.random() < 0.5 else "square")
        (draw.ellipse if shape == "circle" else draw.rectangle)([x - r, y - r, x + r, y + r], fill=rgb)
    return img, {"count": n, "shape": kind, "colour": colour, "background": "light" if light_bg else "dark"}


def _scene(rng: np.random.Generator, size: int) -> Image.Image:
    """A colourful scene of rectangles, ellipses and stripes, denser or sparser than the evaluation's."""
    from ordclip.data.synthetic import _scene as eval_scene

    n = int(rng.choice([int(rng.integers(2, 4)), int(rng.integers(14, 20)), int(rng.integers(5, 13))]))
    return eval_scene(rng, size, n)


def _fade(img: Image.Image, level: float) -> Image.Image:
    """Blend towards a faded sepia print by ``level / 4`` (the evaluation's fading, level in [0, 4])."""
    arr = np.asarray(img, dtype=np.float64)
    gray = arr @ np.array([0.299, 0.587, 0.114])
    faded = 0.45 * np.stack([gray * 1.07, gray * 0.74, gray * 0.43], axis=-1) + 0.55 * 150.0
    alpha = level / 4
    return Image.fromarray(np.clip((1 - alpha) * arr + alpha * faded, 0, 255).astype(np.uint8), "RGB")


def _blur(img: Image.Image, level: float, size: int) -> Image.Image:
    """A Gaussian blur of radius ``2 * level * size / 64`` (the evaluation's blur, level in [0, 4])."""
    radius = 2 * level * size / 64
    return img.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else img


def _level(rng: np.random.Generator) -> tuple[int, float]:
    """A named level 0..4 and the strength drawn around it (never exactly the evaluation's step,
    except level 0, which is no effect at all)."""
    named = int(rng.integers(0, 5))
    if named == 0:
        return 0, 0.0
    return named, float(np.clip(named + rng.uniform(-0.35, 0.35), 0.3, 4.0))


def draw_image(rng: np.random.Generator, family: str, size: int) -> tuple[Image.Image, dict]:
    """One corpus image of ``family`` (count | fade | blur | combined) and its attributes."""
    attrs: dict = {"family": family, "fade": 0, "blur": 0}
    if family == "count":
        img, a = _shapes(rng, size, int(rng.integers(1, 11)), rng.random() < 0.3)
        attrs.update(a)
    elif family in ("fade", "blur"):
        img = _scene(rng, size)
        named, strength = _level(rng)
        img = _fade(img, strength) if family == "fade" else _blur(img, strength, size)
        attrs[family] = named
    elif family == "combined":
        img, a = _shapes(rng, size, int(rng.integers(1, 11)), rng.random() < 0.3)
        attrs.update(a)
        effect = "fade" if rng.random() < 0.5 else "blur"
        named, strength = _level(rng)
        if effect == "blur":  # strong blur merges the shapes: keep the count readable
            named, strength = min(named, 2), min(strength, 2.0)
        img = _fade(img, strength) if effect == "fade" else _blur(img, strength, size)
        attrs[effect] = named
    else:
        raise ValueError(f"unknown corpus family {family!r} ({' | '.join(FAMILIES)})")
    return img, attrs


def family_counts(n: int, weights: dict[str, float]) -> dict[str, int]:
    """How many of the ``n`` images each family gets, in proportion to ``weights``."""
    total = sum(weights.values())
    counts = {f: int(n * w / total) for f, w in weights.items()}
    first = next(iter(counts))
    counts[first] += n - sum(counts.values())
    return counts


def _draws(cfg: dict) -> list[tuple[int, str, int]]:
    """(family number, family, index) of every corpus image, in corpus order."""
    counts = family_counts(cfg["images"], cfg["families"])
    return [(f, family, i) for f, family in enumerate(FAMILIES) for i in range(counts.get(family, 0))]


def _draw_images(cfg: dict, px: int, draws: list[tuple[int, str, int]]) -> tuple[np.ndarray, list[dict], list[str]]:
    """The images of ``draws`` at ``px``, their attributes and hashes (each image from its own seed)."""
    size = cfg["image_size"]
    images = np.empty((len(draws), px, px, 3), dtype=np.uint8)
    attributes, hashes = [], []
    for k, (f, family, i) in enumerate(draws):
        rng = np.random.default_rng([cfg["seed"], f, i])
        img, attrs = draw_image(rng, family, size)
        hashes.append(image_hash(img))
        images[k] = np.asarray(img.resize((px, px), Image.BICUBIC))
        attributes.append(attrs)
    return images, attributes, hashes


def generate_corpus(cfg: dict, px: int, workers: int = 1) -> Corpus:
    """The corpus of ``cfg`` (seed, images, image_size, families: {family: weight}), each image
    drawn at ``image_size`` and resized to ``px`` (bicubic, as ordclip/data/prepare.py); with
    ``workers`` > 1, drawn in that many processes (:func:`start_corpus`)."""
    return start_corpus(cfg, px, workers)()


def start_corpus(cfg: dict, px: int, workers: int = 1) -> Callable[[], Corpus]:
    """Start drawing the corpus of ``cfg`` and return the function that waits for it and returns it.

    With ``workers`` > 1 (and the fork start method, as on Linux) the images are drawn in that many
    forked worker processes while the caller goes on (the pretraining builds its model meanwhile);
    otherwise they are drawn when the returned function is called. Every image comes from its own
    seeded generator, so the corpus is the same, byte for byte, for any number of workers
    (tests/test_pretrain.py). The workers run numpy and PIL only, never torch, so forking a
    process that has imported torch is safe here."""
    draws = _draws(cfg)
    if workers <= 1 or len(draws) < 2 * workers:
        return lambda: Corpus(*_draw_images(cfg, px, draws))
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if "fork" not in multiprocessing.get_all_start_methods():
        log.info(f"corpus: no fork start method on this platform; drawing {len(draws)} images in one process")
        return lambda: Corpus(*_draw_images(cfg, px, draws))
    chunks = 4 * workers  # a few chunks per worker, so that no worker waits long for the slowest
    bounds = [len(draws) * c // chunks for c in range(chunks + 1)]
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    futures = [pool.submit(_draw_images, cfg, px, draws[a:b]) for a, b in zip(bounds, bounds[1:])]

    def result() -> Corpus:
        try:
            parts = [f.result() for f in futures]
        finally:
            pool.shutdown(cancel_futures=True)
        return Corpus(np.concatenate([p[0] for p in parts]), [a for p in parts for a in p[1]],
                      [h for p in parts for h in p[2]])

    return result


# --- captions -------------------------------------------------------------------------------------

def _number(rng: np.random.Generator, n: int) -> str:
    """A count as a word ("three") or as digits ("3")."""
    return NUMBER_WORDS[n - 1] if rng.random() < 0.6 else str(n)


def _things(attrs: dict, rng: np.random.Generator, with_colour: bool) -> str:
    """"three red circles", "1 square", "five shapes" (the count, maybe the colour, the shape)."""
    n = attrs["count"]
    noun = "shape" if attrs["shape"] == "mixed" or rng.random() < 0.3 else attrs["shape"]
    noun = noun if n == 1 else (SHAPES.get(noun, "shapes"))
    colour = attrs["colour"] if with_colour and attrs["colour"] != "mixed" else ""
    if with_colour and attrs["colour"] == "mixed":
        colour = "colourful"
    return " ".join(w for w in (_number(rng, n), colour, noun) if w)


def _effect_words(attrs: dict) -> list[str]:
    """The words of the fading or blur level an image shows ("slightly faded", "very blurry")."""
    out = []
    if attrs["fade"]:
        out.append(FADE_WORDS[attrs["fade"]])
    if attrs["blur"]:
        out.append(BLUR_WORDS[attrs["blur"]])
    return out


def caption(attrs: dict, rng: np.random.Generator) -> str:
    """A caption naming what the image shows, drawn from the templates of its family."""
    family = attrs["family"]
    if family in ("count", "combined"):
        things = _things(attrs, rng, with_colour=rng.random() < 0.6)
        effect = _effect_words(attrs)
        adjective = (effect[0] + " ") if effect and rng.random() < 0.8 else ""
        bg = attrs["background"]
        n_word = _number(rng, attrs["count"])
        templates = [
            f"a {adjective}photo of {things}.",
            f"a {adjective}picture of {things} on a {bg} background.",
            f"the number of shapes is {n_word}.",
            f"there are {n_word} shapes in this {adjective}photo.",
            f"{things}.",
        ]
        if effect:
            word = effect[0]
            templates += [f"a {word} photo of {things}.", f"a {word} picture of {things}.",
                          ("the colours of this photo are " if attrs["fade"] else "this photo is ") + f"{word}."]
        return templates[int(rng.integers(0, len(templates)))]
    if family == "fade":
        word = FADE_WORDS[attrs["fade"]]
        templates = [f"the colours of this photo are {word}.", f"a {word} photo.", f"a {word} picture.",
                     f"a {word} photo of a colourful scene.", f"this photo is {word}.",
                     f"the colours of this picture are {word}."]
        if attrs["fade"] == 0:
            templates += ["a photo with vivid colours.", "this photo is sharp and vivid."]
        return templates[int(rng.integers(0, len(templates)))]
    if family == "blur":
        word = BLUR_WORDS[attrs["blur"]]
        templates = [f"this photo is {word}.", f"a {word} photo.", f"a {word} picture.",
                     f"a {word} photo of a colourful scene.", f"this picture is {word}.",
                     f"a {word} picture of many shapes."]
        if attrs["blur"] == 0:
            templates += ["a sharp, detailed photo.", "this photo is sharp and vivid."]
        return templates[int(rng.integers(0, len(templates)))]
    raise ValueError(f"unknown corpus family {family!r}")
