"""The static HTML evidence report (clever_jax.kb.report)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket

import numpy as np
import pytest
from conftest import dead_pid

from clever_jax import files
from clever_jax.data.jsonio import DataError
from clever_jax.kb import report


def evidence(image_id, subject_box, object_box, weight=0.5, size=(500, 375), **extra):
    e = {"image_id": image_id, "subject_box": subject_box, "object_box": object_box, "weight": weight, **extra}
    return {**e, "image_size": list(size)} if size else e


def triplet(subject, relation, obj, score, items=(), **flags):
    return {"subject": subject, "relation": relation, "object": obj, "score": score, **flags, "evidence": list(items)}


TRIPLETS = [
    triplet("man", "riding", "horse", 0.91, [evidence(1, [10.0, 20.0, 110.0, 220.0], [5.0, 80.0, 300.0, 400.0],
                                                      0.41, annotated=True, true=False)], in_training_kb=True),
    triplet("<b>cat", "on", "table", 0.85, [evidence(2, [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 50.0, 60.0], size=None)],
            known=False),
    triplet("woman", "riding", "bike", 0.7, [evidence(3, [0, 0, 10, 10], [5, 5, 20, 20])], in_training_kb=False),
    triplet("boy", "riding", "skateboard", 0.6, [evidence(4, [0, 0, 10, 10], [5, 5, 20, 20])]),
    triplet("dog", "on", "bed", 0.5),
    triplet("cup", "on", "desk", 0.4),
    triplet("man", "near", "car", 0.3, in_training_kb=False),
]


def write_kb(path, triplets=TRIPLETS) -> str:
    with open(path, "w") as f:
        f.writelines(json.dumps(t) + "\n" for t in triplets)
    return str(path)


def headings(page: str) -> list[str]:
    return re.findall(r"<h3>(.*?)</h3>", page)


def test_top_triplets_of_each_relation_in_order(tmp_path):
    out = tmp_path / "report.html"
    assert report.write_report(write_kb(tmp_path / "kb.jsonl"), str(out), per_relation=2) == 5
    page = out.read_text()
    assert re.findall(r'<h2>(.*?)</h2>', page) == ["riding", "on", "near"]  # By best score.
    titles = [re.sub("<.*?>", "", h) for h in headings(page)]
    assert titles == ["man riding horse", "woman riding bike", "&lt;b&gt;cat on table", "dog on bed", "man near car"]
    assert "<b>cat" not in page
    assert re.findall(r'data-known="(\w+)"', page) == ["known", "new", "new", "unknown", "new"]
    assert 'data-shown="5"' in page and "5 of 5 triplets shown" in page
    assert "annotated yes" in page and "true no" in page and "weight 0.410" in page


def test_each_triplet_lists_the_negatives_of_its_neighbourhood(tmp_path):
    kb, page = write_kb(tmp_path / "kb.jsonl"), tmp_path / "r.html"
    report.write_report(kb, str(page))
    assert "the model says false" not in page.read_text()  # No negatives.jsonl beside it: no line.
    write_kb(tmp_path / "negatives.jsonl", [
        triplet("woman", "riding", "horse", 0.001), triplet("man", "riding", "bus", 0.002),
        triplet("man", "on", "horse", 0.003), triplet("<i>", "riding", "bike", 0.004)])
    report.write_report(kb, str(page))
    lines = re.findall(r'<p class="negatives">(.*?)</p>', page.read_text())
    assert lines == ["the model says false: woman riding horse (0.0010); man riding bus (0.0020)",  # man riding horse
                     "the model says false: &lt;i&gt; riding bike (0.0040); woman riding horse (0.0010)"]
    (tmp_path / "negatives.jsonl").write_text('{"subject": "man"}\n')
    with pytest.raises(DataError, match=r"negatives\.jsonl line 1"):
        report.write_report(kb, str(page))


def test_boxes_on_a_blank_canvas_of_the_image_size(tmp_path):
    out = tmp_path / "report.html"
    report.write_report(write_kb(tmp_path / "kb.jsonl"), str(out), per_relation=1)
    page = out.read_text()
    assert '<svg viewBox="0 0 500 375"' in page
    assert '<rect class="subject" x="10" y="20" width="100" height="200"' in page
    assert '<rect class="object" x="5" y="80" width="295" height="320"' in page
    assert '<svg viewBox="0 0 50 60"' in page  # No image_size, no image: the boxes' extent.
    assert page.count('class="canvas"') == 2 and "<image" not in page


def test_boxes_over_the_real_image(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = tmp_path / "vg" / "VG_100K"
    images.mkdir(parents=True)
    plt.imsave(images / "2.jpg", np.zeros((30, 40, 3), np.uint8))  # Width 40, height 30.
    out = tmp_path / "html" / "report.html"
    report.write_report(write_kb(tmp_path / "kb.jsonl"), str(out), images_dir=str(tmp_path / "vg"), per_relation=1)
    page = out.read_text()
    assert '<image href="../vg/VG_100K/2.jpg"' in page
    assert '<svg viewBox="0 0 40 30"' in page  # No image_size: the file's size.
    assert page.count('class="canvas"') == 1  # Image 1 is not there.


@pytest.mark.parametrize("line, message", [
    ("{not json", "kb.jsonl line 2: not JSON"),
    ('{"subject": "a", "object": "b", "score": 1}', "kb.jsonl line 2: no 'relation'"),
    ('{"subject": "a", "relation": "r", "object": "b", "score": 1, "evidence": [{"image_id": 1}]}',
     "kb.jsonl line 2: evidence 0: no 'subject_box'"),
    ("[" * 200_000, "kb.jsonl line 2: not a triplet: JSON nested too deep"),
    ('{"subject": 5, "relation": "r", "object": "b", "score": 1}',
     "kb.jsonl line 2: 'subject' is 5, expected a name (a non-empty string)"),
    ('{"subject": "a", "relation": ["on"], "object": "b", "score": 1}',
     "kb.jsonl line 2: 'relation' is ['on'], expected a name"),
    ('{"subject": "a", "relation": "r", "object": "b", "score": NaN}', "'score' is nan, expected a finite number"),
    ('{"subject": "a", "relation": "r", "object": "b", "score": 1, "known": "yes"}',
     "'known' is 'yes', expected true or false"),
    ('{"subject": "a", "relation": "r", "object": "b", "score": 1, "evidence": {}}',
     "'evidence' is {}, expected a list"),
    ('{"subject": "a", "relation": "r", "object": "b", "score": 1, "evidence": [{"image_id": "../secret/x", '
     '"subject_box": [0, 0, 1, 1], "object_box": [0, 0, 1, 1]}]}',
     "kb.jsonl line 2: evidence 0: 'image_id' is '../secret/x', expected an image id (a whole number from 0"),
    ('{"subject": "a", "relation": "r", "object": "b", "score": 1, "evidence": [{"image_id": 1, '
     '"subject_box": [0, 0, 1, 1], "object_box": [0, 0, 1, 1], "weight": "heavy"}]}',
     "evidence 0: 'weight' is 'heavy', expected a finite number"),
    ('{"subject": "a", "relation": "r", "object": "b", "score": 1, "evidence": [{"image_id": 1, '
     '"subject_box": [0, 0, 1, 1], "object_box": [0, 0, 1, 1], "image_size": [0, 5]}]}',
     "evidence 0: 'image_size' is [0, 5], expected [width, height] (positive numbers)"),
    ('{"subject": "a", "relation": "r", "object": "b", "score": 1, "evidence": [{"image_id": 1, '
     '"subject_box": [0, 0, 1, 1e999], "object_box": [0, 0, 1, 1]}]}',
     "evidence 0: 'subject_box' is [0, 0, 1, inf], expected [x1, y1, x2, y2] (finite numbers)"),
])
def test_bad_lines_are_named(tmp_path, line, message):
    path = tmp_path / "kb.jsonl"
    path.write_text(json.dumps(TRIPLETS[0]) + "\n" + line + "\n")
    with pytest.raises(DataError, match=re.escape(message)):
        report.write_report(str(path), str(tmp_path / "report.html"))
    assert not (tmp_path / "report.html").exists()


def test_an_empty_or_missing_kb(tmp_path):
    (tmp_path / "kb.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no triplets"):
        report.write_report(str(tmp_path / "kb.jsonl"), str(tmp_path / "report.html"))
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        report.write_report(str(tmp_path / "missing.jsonl"), str(tmp_path / "report.html"))
    (tmp_path / "latin1.jsonl").write_bytes(b'\n{"subject": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin1\.jsonl line 2: not UTF-8 text \(byte 16 of the line\)"):
        report.write_report(str(tmp_path / "latin1.jsonl"), str(tmp_path / "report.html"))


def test_filters_in_a_real_browser(tmp_path):
    if not any(shutil.which(name) for name in report.CHROMIUMS):
        pytest.skip("no chromium binary")
    out = tmp_path / "report.html"
    report.write_report(write_kb(tmp_path / "kb.jsonl"), str(out), per_relation=10)
    url = out.resolve().as_uri()
    dom = report.rendered_dom(url + "#relation=riding")
    assert 'data-shown="3"' in dom and "3 of 7 triplets shown" in dom
    dom = report.rendered_dom(str(out) + "#relation=RID&known=new&min_score=0.65")  # A path, case-insensitive.
    assert 'data-shown="1"' in dom
    png = tmp_path / "report.png"
    report.screenshot(str(out), str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_mode_writes_the_page_next_to_the_workdirs_kb(tmp_path):
    from clever_jax import job
    from configs import demo

    (tmp_path / "kb").mkdir()
    write_kb(tmp_path / "kb" / "kb.jsonl")
    config = demo.get_config("tiny")
    config.report.per_relation = 1
    job.run(config, str(tmp_path), "report")
    page = (tmp_path / "kb" / "report.html").read_text()
    assert 'data-shown="3"' in page
    assert [re.sub("<.*?>", "", h) for h in headings(page)] == ["man riding horse", "<b>cat on table".replace(
        "<", "&lt;").replace(">", "&gt;"), "man near car"]


def test_a_kb_cut_or_mixed_against_its_meta_is_refused(tmp_path):
    write_kb(tmp_path / "kb.jsonl", TRIPLETS[:-1])  # Cut at a line boundary.
    (tmp_path / "kb_meta.json").write_text(json.dumps({"triplets": len(TRIPLETS)}))
    with pytest.raises(DataError, match=rf"kb\.jsonl holds {len(TRIPLETS) - 1} triplets but .*kb_meta\.json, "
                                        rf"written with it, records {len(TRIPLETS)}"):
        report.write_report(str(tmp_path / "kb.jsonl"), str(tmp_path / "report.html"))
    write_kb(tmp_path / "kb.jsonl")
    assert report.write_report(str(tmp_path / "kb.jsonl"), str(tmp_path / "report.html")) == len(TRIPLETS)


def test_a_report_removes_its_stale_temporaries(tmp_path):
    host, dead = socket.gethostname(), dead_pid()
    (tmp_path / "kb").mkdir()
    (tmp_path / "out").mkdir()
    left = [tmp_path / "out" / f"report.html.{host}.{dead}.tmp",
            tmp_path / "kb" / f"kb.jsonl.index.sqlite.{host}.{dead}.tmp"]
    others = tmp_path / "out" / f"notes.txt.{host}.{dead}.tmp"  # Not the report's: its folder may be /tmp.
    for path in [*left, others]:
        path.write_text("half")
    report.write_report(write_kb(tmp_path / "kb" / "kb.jsonl"), str(tmp_path / "out" / "report.html"))
    assert sorted(os.listdir(tmp_path / "out")) == [others.name, "report.html"]
    assert os.listdir(tmp_path / "kb") == ["kb.jsonl"]


def publish(root, triplets) -> str:
    """A knowledge base folder as --mode=kb writes it (files.atomic_folder); the path of its kb.jsonl."""
    with files.atomic_folder(root, ("kb.jsonl", "kb_meta.json")) as partial:
        write_kb(os.path.join(partial, "kb.jsonl"), triplets)
        files.write_json(os.path.join(partial, "kb_meta.json"), {"triplets": len(triplets)})
    return str(root / "kb.jsonl")


def test_a_users_own_file_beside_the_kb_is_not_checked_against_kb_meta(tmp_path):
    publish(tmp_path / "kb", TRIPLETS)
    top = write_kb(tmp_path / "kb" / "top.jsonl", TRIPLETS[:2])  # E.g. filtered with jq.
    assert report.write_report(top, str(tmp_path / "report.html")) == 2


def test_kb_meta_too_deep_is_named(tmp_path):
    kb = publish(tmp_path / "kb", TRIPLETS)
    meta = os.path.realpath(tmp_path / "kb" / "kb_meta.json")
    with open(meta, "w") as f:
        f.write("[" * 100_000)
    with pytest.raises(DataError, match=r"kb_meta\.json: .*nested"):
        report.read_kb(kb, 1)
    files.write_json(meta, [3])
    with pytest.raises(DataError, match=r"kb_meta\.json: expected the JSON object --mode=kb writes"):
        report.read_kb(kb, 1)


def test_a_kb_replaced_while_it_is_read_is_read_from_one_version(tmp_path, monkeypatch):
    kb = publish(tmp_path / "kb", TRIPLETS[:2])
    read = report.triplets

    def read_then_replace(path):  # An extraction replaces the knowledge base once this one is read.
        yield from read(path)
        publish(tmp_path / "kb", TRIPLETS)

    monkeypatch.setattr(report, "triplets", read_then_replace)
    assert report.read_kb(kb, 10)[1] == 2
