"""A static HTML evidence report of a knowledge base (kb.jsonl of `--mode=kb`, or a triplets.jsonl).

  python -m clever_jax.kb.report --kb=runs/demo/kb/kb.jsonl --out=report.html [--images_dir=VG_DIR]
      [--per_relation=10] [--title=TEXT] [--screenshot=report.png]

One self-contained page (inline CSS, SVG and a little JavaScript; no server, no network): the top
triplets of each relation with score, known flag and evidence, each evidence instance drawn as an
SVG of the image's size with the subject box (orange) and object box (blue) over the real image
when `images_dir` holds it, else over a grey canvas; with negatives.jsonl beside the knowledge base
(extract.negatives), each triplet also lists up to three negatives sharing its relation and an entity;
with a non-empty images.npz (extract.image_index), each opens the five images of the collection that
show it best (kb/image_index.py). The page filters by subject, relation and object (substrings),
minimum score and known / new; the initial filters come from the URL fragment, e.g.
report.html#relation=riding&known=new&min_score=0.5.
--screenshot renders the page with headless Chromium.
"""

from __future__ import annotations

import glob
import html
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from absl import app, flags

from clever_jax import files
from clever_jax.data.jsonio import DataError, load_json
from clever_jax.data.vocab import benchmark_vocab
from clever_jax.kb import image_index

REQUIRED = ("subject", "relation", "object", "score")
FLAGS = ("in_training_kb", "known")
EVIDENCE_REQUIRED = ("image_id", "subject_box", "object_box")
EVIDENCE_FLAGS = ("annotated", "true")
KB, META = "kb.jsonl", "kb_meta.json"  # --mode=kb writes them together: the "triplets" count is checked.
NEGATIVES = "negatives.jsonl"  # Beside them (kb/negatives.py); empty without extract.negatives.
CHROMIUMS = ("chromium", "chromium-browser", "google-chrome")
COLOURS = {"subject": "#e8590c", "object": "#1c7ed6"}

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; } section h2 { border-bottom: 1px solid #ccc; }
form { display: flex; flex-wrap: wrap; gap: .8em; margin: 1em 0; } [hidden] { display: none !important; }
.negatives { color: #a61e4d; font-size: 90%; margin: .2em 0; }
article { margin: 0 0 1.2em 1em; } article h3 { margin: .3em 0; font-weight: normal; } .rel { font-weight: bold; }
.meta { color: #555; margin: 0; font-size: 90%; } .evidence { display: flex; flex-wrap: wrap; gap: .8em; }
figure { margin: .3em 0; } figure svg { width: 240px; height: 180px; } figcaption { font-size: 80%; color: #444; }
"""

SCRIPT = """
(() => {
  const form = document.getElementById("filters");
  const items = [...document.querySelectorAll("article.triplet")];
  function apply() {
    const text = ["subject", "relation", "object"].map(k => [k, form.elements[k].value.trim().toLowerCase()]);
    const minScore = parseFloat(form.elements.min_score.value);
    const known = form.elements.known.value || "all";
    let shown = 0;
    for (const item of items) {
      const ok = text.every(([k, v]) => item.dataset[k].toLowerCase().includes(v))
        && (isNaN(minScore) || parseFloat(item.dataset.score) >= minScore)
        && (known === "all" || item.dataset.known === known);
      item.hidden = !ok;
      shown += ok ? 1 : 0;
    }
    for (const section of document.querySelectorAll("section.relation")) {
      section.hidden = !section.querySelector("article.triplet:not([hidden])");
    }
    document.getElementById("count").textContent = shown + " of " + items.length + " triplets shown";
    document.body.setAttribute("data-shown", String(shown));
  }
  function fromFragment() {
    new URLSearchParams(location.hash.slice(1)).forEach((v, k) => {
      if (form.elements[k]) form.elements[k].value = v;
    });
    apply();
  }
  form.addEventListener("input", apply);
  form.addEventListener("submit", e => e.preventDefault());
  window.addEventListener("hashchange", fromFragment);
  fromFragment();
})();
"""


def triplets(kb_path: str) -> Iterator[tuple[int, dict, str]]:
    """(line number, triplet, line) of each non-empty line of a knowledge base, each checked (check_triplet).

    Raises DataError naming the file and line of a bad one."""
    with open(kb_path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            where = f"{kb_path} line {line_no}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{where}: not UTF-8 text (byte {e.start} of the line)") from e
            if not line.strip():
                continue
            try:
                t = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not JSON: {e.msg} at char {e.pos}") from e
            except RecursionError as e:
                raise DataError(f"{where}: not a triplet: JSON nested too deep") from e
            check_triplet(t, where)
            yield line_no, t, line


def check_count(kb_path: str, count: int) -> None:
    """DataError when the kb_meta.json written with a kb.jsonl (beside the file `kb_path` links to)
    records another number of triplets than the `count` it holds: a cut or mixed knowledge base.
    Readers pass the resolved path they read (os.path.realpath), so both files are of one version."""
    real = os.path.realpath(kb_path)
    meta_path = os.path.join(os.path.dirname(real), META)
    if os.path.basename(real) != KB or not os.path.isfile(meta_path):
        return  # Not a knowledge base of --mode=kb (e.g. a triplets.jsonl of --mode=extract, or a filtered copy).
    meta = load_json(meta_path)
    expected = meta.get("triplets") if isinstance(meta, dict) else None
    if not isinstance(expected, int) or isinstance(expected, bool):
        raise DataError(f"{meta_path}: expected the JSON object --mode=kb writes, with 'triplets' (the "
                        f"count of {kb_path}), found {json.dumps(meta)[:200]}")
    if expected != count:
        raise DataError(f"{kb_path} holds {count} triplets but {meta_path}, written with it, records {expected}: "
                        "the knowledge base is cut or mixed with another extraction's files; extract it again")


def read_kb(kb_path: str, per_relation: int) -> tuple[dict[str, list[dict]], int, str]:
    """({relation: its first `per_relation` triplets, in file order}, triplets in the file, the path read).

    The links to a knowledge base folder (files.atomic_folder) are resolved once, so kb.jsonl and
    kb_meta.json are read from one version even while an extraction replaces it. Raises
    FileNotFoundError for a missing file, DataError naming the line for a bad one, the file when
    empty, or both files when kb_meta.json records another count (check_count)."""
    if not os.path.isfile(kb_path):
        raise FileNotFoundError(f"{kb_path}: no knowledge base (--mode=kb writes WORKDIR/kb/kb.jsonl)")
    real = os.path.realpath(kb_path)
    kept: dict[str, list[dict]] = {}
    total = 0
    for _, t, _ in triplets(real):
        total += 1
        group = kept.setdefault(t["relation"], [])
        if len(group) < per_relation:
            group.append(t)
    if not total:
        raise DataError(f"{kb_path}: no triplets (an empty knowledge base)")
    check_count(real, total)
    return kept, total, real


def _number(x: object) -> bool:
    """Whether `x` is a finite JSON number (not a bool)."""
    try:
        return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
    except OverflowError:  # An integer beyond any float.
        return False


def check_triplet(t: object, where: str) -> None:
    """DataError naming `where` and what was expected unless `t` is a triplet as --mode=kb (or
    --mode=extract) writes it: names as strings, a finite score, flags as booleans and well-formed evidence."""
    if not isinstance(t, dict):
        raise DataError(f"{where}: expected a JSON object (a triplet), found {type(t).__name__}")
    for key in REQUIRED:
        if key not in t:
            raise DataError(f"{where}: no {key!r}")
    for key in REQUIRED[:3]:
        if not isinstance(t[key], str) or not t[key]:
            raise DataError(f"{where}: {key!r} is {t[key]!r}, expected a name (a non-empty string)")
    if not _number(t["score"]):
        raise DataError(f"{where}: 'score' is {t['score']!r}, expected a finite number")
    for key in FLAGS:
        if key in t and not isinstance(t[key], bool):
            raise DataError(f"{where}: {key!r} is {t[key]!r}, expected true or false")
    if not isinstance(t.get("evidence", []), list):
        raise DataError(f"{where}: 'evidence' is {t['evidence']!r}, expected a list")
    for k, e in enumerate(t.get("evidence", [])):
        check_evidence(e, f"{where}: evidence {k}")


def check_evidence(e: object, where: str) -> None:
    """DataError naming `where` unless `e` is an evidence instance: a whole-number image id (its file
    name in images_dir), two [x1, y1, x2, y2] boxes, and optional weight, image size and flags."""
    if not isinstance(e, dict):
        raise DataError(f"{where}: expected a JSON object (an evidence instance), found {type(e).__name__}")
    missing = [key for key in EVIDENCE_REQUIRED if key not in e]
    if missing:
        raise DataError(f"{where}: no {missing[0]!r}")
    image_id = e["image_id"]
    if not (isinstance(image_id, int) and not isinstance(image_id, bool) and 0 <= image_id < 2**63):
        raise DataError(f"{where}: 'image_id' is {image_id!r}, expected an image id (a whole number from 0 to "
                        "2^63 - 1)")
    for key in ("subject_box", "object_box"):
        box = e[key]
        if not (isinstance(box, list) and len(box) == 4 and all(map(_number, box))):
            raise DataError(f"{where}: {key!r} is {box!r}, expected [x1, y1, x2, y2] (finite numbers)")
    if "weight" in e and not _number(e["weight"]):
        raise DataError(f"{where}: 'weight' is {e['weight']!r}, expected a finite number")
    size = e.get("image_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2 and all(map(_number, size))
                                 and min(size) > 0):
        raise DataError(f"{where}: 'image_size' is {size!r}, expected [width, height] (positive numbers)")
    for key in EVIDENCE_FLAGS:
        if key in e and not isinstance(e[key], bool):
            raise DataError(f"{where}: {key!r} is {e[key]!r}, expected true or false")


def remove_stale(kb_path: str, out_path: str = "") -> None:
    """Removes what dead processes of this host left beside the knowledge base (files.remove_stale:
    temporaries, partial knowledge bases) and the temporaries of `out_path` (only those: its folder
    may be a shared one, such as /tmp)."""
    files.remove_stale(os.path.dirname(os.path.abspath(kb_path)))
    if out_path:
        files.remove_left(glob.glob(glob.escape(os.path.abspath(out_path)) + ".*.tmp"))


def known_flag(t: dict) -> str:
    """'known', 'new' or 'unknown': `in_training_kb` (kb.jsonl) or `known` (triplets.jsonl)."""
    flag = t.get("in_training_kb", t.get("known"))
    return "unknown" if flag is None else ("known" if flag else "new")


def find_image(images_dir: str, image_id: object) -> str | None:
    """The path of image `image_id` in a Visual Genome folder (top level, VG_100K or VG_100K_2), or None."""
    if not images_dir:
        return None
    for folder in ("", "VG_100K", "VG_100K_2"):
        path = os.path.join(images_dir, folder, f"{image_id}.jpg")
        if os.path.isfile(path):
            return path
    return None


def file_size(path: str) -> tuple[float, float]:
    """(width, height) of an image file, read with PIL (else matplotlib)."""
    try:
        from PIL import Image
    except ImportError:
        import matplotlib.image

        height, width = matplotlib.image.imread(path).shape[:2]
        return float(width), float(height)
    with Image.open(path) as image:
        return float(image.size[0]), float(image.size[1])


def image_size(e: dict, path: str | None) -> tuple[float, float]:
    """The evidence's `image_size`, else the image file's size, else the two boxes' bounding extent."""
    if e.get("image_size"):
        return float(e["image_size"][0]), float(e["image_size"][1])
    if path:
        return file_size(path)
    boxes = (e["subject_box"], e["object_box"])
    return max(1.0, *(b[2] for b in boxes)), max(1.0, *(b[3] for b in boxes))


def read_negatives(real_kb_path: str) -> dict[tuple[str, str], list[dict]]:
    """The negatives written with a knowledge base (negatives.jsonl beside `real_kb_path`, the resolved
    path read_kb read, so both come from one version; each line checked), by (relation, "subject NAME")
    and (relation, "object NAME"), lowest score first; {} when there are none (an empty file: extraction
    without extract.negatives). Raises DataError naming a bad line."""
    path = os.path.join(os.path.dirname(real_kb_path), NEGATIVES)
    index: dict[tuple[str, str], list[dict]] = {}
    if os.path.isfile(path):
        for _, n, _ in triplets(path):
            for role in ("subject", "object"):
                index.setdefault((n["relation"], f"{role} {n[role]}"), []).append(n)
    return index


def negatives_html(t: dict, negatives: dict[tuple[str, str], list[dict]], limit: int = 3) -> str:
    """A line of up to `limit` negatives that share the triplet's relation and one of its entities (those
    sharing its object first, each group lowest score first)."""
    near = [n for role in ("object", "subject") for n in negatives.get((t["relation"], f"{role} {t[role]}"), [])
            if (n["subject"], n["object"]) != (t["subject"], t["object"])][:limit]
    if not near:
        return ""
    said = "; ".join(f"{html.escape(n['subject'])} {html.escape(n['relation'])} {html.escape(n['object'])} "
                     f"({float(n['score']):.4f})" for n in near)
    return f'<p class="negatives">the model says false: {said}</p>'


def ranked_images_html(t: dict, index: dict | None, images_dir: str, out_dir: str, top: int = 5) -> str:
    """The `top` images that show the triplet best (image_index.rank), behind a <details> a reader opens."""
    if index is None:
        return ""
    ranked = image_index.rank(index, benchmark_vocab(), t["subject"], t["relation"], t["object"], top)
    figures = "".join(evidence_svg(t, e, images_dir, out_dir) for e in ranked)
    return (f'<details class="ranked"><summary>the {len(ranked)} images of the collection that show it best'
            f'</summary><div class="evidence">{figures}</div></details>')


def num(x: float) -> str:
    return f"{float(x):g}"


def evidence_svg(t: dict, e: dict, images_dir: str, out_dir: str) -> str:
    """One evidence instance as a <figure>: an SVG of the image's size with both boxes, and a caption."""
    path = find_image(images_dir, e["image_id"])
    width, height = image_size(e, path)
    font = max(width, height) / 22
    parts = [f'<svg viewBox="0 0 {num(width)} {num(height)}" xmlns="http://www.w3.org/2000/svg">']
    if path:
        href = urllib.parse.quote(os.path.relpath(path, out_dir).replace(os.sep, "/"))
        parts.append(f'<image href="{html.escape(href)}" x="0" y="0" width="{num(width)}" height="{num(height)}" '
                     'preserveAspectRatio="none"/>')
    else:
        parts.append(f'<rect class="canvas" x="0" y="0" width="{num(width)}" height="{num(height)}" fill="#e9ecef"/>')
    for role in ("subject", "object"):
        x1, y1, x2, y2 = e[f"{role}_box"]
        parts.append(f'<rect class="{role}" x="{num(x1)}" y="{num(y1)}" width="{num(x2 - x1)}" height="{num(y2 - y1)}" '
                     f'fill="none" stroke="{COLOURS[role]}" stroke-width="3" vector-effect="non-scaling-stroke"/>')
        parts.append(f'<text x="{num(x1)}" y="{num(y1 + font)}" font-size="{num(font)}" fill="{COLOURS[role]}" '
                     f'stroke="#fff" stroke-width="{num(font / 8)}" paint-order="stroke">{html.escape(t[role])}</text>')
    parts.append("</svg>")
    caption = [f"image {html.escape(str(e['image_id']))}"]
    caption += [f"{key} {float(e[key]):.3f}" for key in ("weight", "score") if key in e]
    caption += [f"{key} {'yes' if e[key] else 'no'}" for key in ("annotated", "true") if key in e]
    return f"<figure>{''.join(parts)}<figcaption>{' &middot; '.join(caption)}</figcaption></figure>"


def triplet_html(t: dict, images_dir: str, out_dir: str, negatives: dict | None = None,
                 index: dict | None = None) -> str:
    """One triplet as an <article> whose data attributes the page's filters read; with `negatives`
    (read_negatives), the neighbours the model says are false; with `index` (image_index.beside), its
    ranked images."""
    known = known_flag(t)
    attributes = " ".join(f'data-{key}="{html.escape(str(t[key]))}"' for key in ("subject", "relation", "object"))
    evidence = "".join(evidence_svg(t, e, images_dir, out_dir) for e in t.get("evidence", []))
    return (f'<article class="triplet" {attributes} data-score="{float(t["score"])!r}" data-known="{known}">'
            f'<h3>{html.escape(t["subject"])} <span class="rel">{html.escape(t["relation"])}</span> '
            f'{html.escape(t["object"])}</h3><p class="meta">score {float(t["score"]):.4f} &middot; {known}</p>'
            f'{negatives_html(t, negatives or {})}'
            f'<div class="evidence">{evidence or "<p class=meta>no evidence</p>"}</div>'
            f'{ranked_images_html(t, index, images_dir, out_dir)}</article>')


def write_report(kb_path: str, out_path: str, images_dir: str = "", per_relation: int = 10, title: str = "") -> int:
    """Writes the report; returns the number of triplets shown.

    The top `per_relation` triplets of each relation, in the file's (best first) order; relations
    ordered by their best score (ties: alphabetically). Image paths are relative to `out_path`'s folder."""
    if per_relation < 1:
        raise ValueError(f"per_relation is {per_relation}, expected at least 1")
    remove_stale(kb_path, out_path)
    kept, total, real = read_kb(kb_path, per_relation)
    negatives, index = read_negatives(real), image_index.beside(real)
    relations = sorted(kept, key=lambda r: (-max(float(t["score"]) for t in kept[r]), r))
    out_dir = os.path.dirname(os.path.abspath(out_path))
    shown = sum(len(group) for group in kept.values())
    title = html.escape(title or f"Knowledge base: {os.path.basename(kb_path)}")
    sections = [f'<section class="relation" data-relation="{html.escape(r)}"><h2>{html.escape(r)}</h2>'
                + "".join(triplet_html(t, images_dir, out_dir, negatives, index) for t in kept[r]) + "</section>"
                for r in relations]
    inputs = "".join(f'<label>{k} <input type="search" name="{k}"></label>' for k in ("subject", "relation", "object"))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{STYLE}</style></head>
<body data-shown="{shown}" data-total="{shown}">
<h1>{title}</h1>
<p class="meta">{total} triplets in {html.escape(kb_path)}, {len(relations)} relations; the top {per_relation} of
each shown, relations by their best score. Boxes: <span style="color:{COLOURS['subject']}">subject</span>,
<span style="color:{COLOURS['object']}">object</span>.</p>
<form id="filters">{inputs}
<label>min score <input type="number" name="min_score" step="0.01"></label>
<label>facts <select name="known"><option value="all">all</option><option value="known">known</option>
<option value="new">new</option><option value="unknown">unknown</option></select></label></form>
<p id="count">{shown} of {shown} triplets shown</p>
{chr(10).join(sections)}
<script>{SCRIPT}</script>
</body></html>
"""
    with files.atomic_write(out_path, "wb") as f:
        f.write(page.encode("utf-8"))
    return shown


def chromium() -> str:
    """The path of a Chromium (or Chrome) binary; RuntimeError when none is on PATH."""
    for name in CHROMIUMS:
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError(f"no Chromium binary found on PATH (tried {', '.join(CHROMIUMS)}); install chromium")


def _run_chromium(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    """Headless Chromium with `args`, in a throwaway profile (so concurrent runs never share one)."""
    with tempfile.TemporaryDirectory() as profile:
        command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}", *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode:
        raise RuntimeError(f"chromium exited with {result.returncode}: {result.stderr[-2000:]}")
    return result


def file_url(path_or_url: str) -> str:
    """A file:// URL of a path (its '#fragment' kept); a URL unchanged."""
    if path_or_url.startswith(("file:", "http:", "https:")):
        return path_or_url
    path, sep, fragment = path_or_url.partition("#")
    return Path(path).resolve().as_uri() + sep + fragment


def screenshot(html_path: str, png_path: str, window: tuple[int, int] = (1280, 900)) -> None:
    """Renders `html_path` with headless Chromium into `png_path`; RuntimeError when that fails."""
    png_path = os.path.abspath(png_path)
    os.makedirs(os.path.dirname(png_path), exist_ok=True)
    result = _run_chromium(["--hide-scrollbars", f"--window-size={window[0]},{window[1]}",
                            f"--screenshot={png_path}", file_url(html_path)])
    if not os.path.isfile(png_path) or not os.path.getsize(png_path):
        raise RuntimeError(f"chromium wrote no screenshot at {png_path}: {result.stderr[-2000:]}")


def rendered_dom(html_path_with_fragment: str) -> str:
    """The page's DOM after its scripts ran (headless Chromium --dump-dom), e.g. of 'report.html#known=new'."""
    return _run_chromium(["--virtual-time-budget=2000", "--dump-dom", file_url(html_path_with_fragment)]).stdout


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    args = flags.FLAGS
    try:
        shown = write_report(args.kb, args.out, args.images_dir, args.per_relation, args.title)
        print(f"{args.out}: {shown} triplets")
        if args.screenshot:
            screenshot(args.out, args.screenshot)
            print(f"{args.screenshot}: screenshot")
    except (ValueError, FileNotFoundError, RuntimeError, subprocess.TimeoutExpired) as e:
        sys.exit(f"{type(e).__name__}: {e}")


if __name__ == "__main__":
    flags.DEFINE_string("kb", None, "Knowledge base: kb.jsonl of --mode=kb (or triplets.jsonl of --mode=extract).")
    flags.DEFINE_string("out", None, "The HTML report to write.")
    flags.DEFINE_string("images_dir", "", "Visual Genome images (ID.jpg, VG_100K/ID.jpg or VG_100K_2/ID.jpg).")
    flags.DEFINE_integer("per_relation", 10, "Triplets shown per relation (its best).")
    flags.DEFINE_string("title", "", "The page's title (default: the knowledge base's file name).")
    flags.DEFINE_string("screenshot", "", "Also render the page with headless Chromium into this PNG.")
    flags.mark_flags_as_required(["kb", "out"])
    app.run(main)
