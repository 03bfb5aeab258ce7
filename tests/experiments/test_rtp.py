"""RTP: caption corpora, the vocabulary-driven triplet matcher and the caption-count row of the results."""

import json

import numpy as np
import pytest

from clever_jax.data.jsonio import DataError
from clever_jax.data.vocab import benchmark_vocab
from clever_jax.experiments import results
from clever_jax.experiments.baselines import captions, rtp
from configs import demo

VOCAB = benchmark_vocab()


def named(caption: str) -> set[tuple[str, str, str]]:
    found = captions.CaptionMatcher(VOCAB).triplets(caption)
    return {(VOCAB.entities[s], VOCAB.predicates[r - 1], VOCAB.entities[o]) for s, r, o in found}


@pytest.mark.parametrize("caption, expected", [
    ("A tree behind a man.", {("tree", "behind", "man")}),
    ("Two MEN riding horses in the field", {("man", "riding", "horse")}),  # Plurals, irregular ones, case.
    ("A shirt worn by a man.", {("shirt", "worn by", "man")}),  # An inverse wording keeps its own direction.
    ("There is a person wearing a t-shirt.", {("person", "wearing", "shirt")}),
    ("A small dog is sitting on the back of a zebra.", {("dog", "on back of", "zebra")}),
    ("A man in front of a building", {("man", "in front of", "building")}),  # Multi-word predicate.
    ("A glorp next to a blarg near a tree.", set()),  # Unknown words: no mention, no triplet.
    ("A picture of a dog and a cat.", set()),  # Two mentions, no predicate between them.
    ("A view of the harbor.", set()),
])
def test_the_matcher_reads_hand_written_captions(caption, expected):
    assert named(caption) == expected


def test_caption_formats_are_read(tmp_path):
    world = tmp_path / "captions.json"
    world.write_text(json.dumps([{"image_id": 1, "caption": "A man on a horse."}]))
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"annotations": [{"image_id": 1, "id": 3, "caption": "A cat on a bed."}]}))
    tsv = tmp_path / "cc.tsv"
    tsv.write_text("A dog near a car.\thttp://x/1.jpg\n\nA man holding an umbrella\thttp://x/2.jpg\n")
    assert list(captions.read_captions(str(world))) == ["A man on a horse."]
    assert list(captions.read_captions(str(coco))) == ["A cat on a bed."]
    assert list(captions.read_captions(str(tsv))) == ["A dog near a car.", "A man holding an umbrella"]
    counts = rtp.triplet_counts(captions.read_captions(str(tsv)), VOCAB)
    dog, car = VOCAB.entity_index["dog"], VOCAB.entity_index["car"]
    assert counts.sum() == 2 and counts[dog, VOCAB.relation_id("near"), car] == 1
    scores = rtp.scores(counts, np.array([[dog, car], [car, dog]]))
    assert scores.shape == (2, len(VOCAB.predicates)) and scores[0, VOCAB.relation_id("near") - 1] == 1
    assert scores[1].sum() == 0  # Never stated: 0.


def test_bad_caption_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.tsv: no caption corpus there; give a caption corpus"):
        list(captions.read_captions(str(tmp_path / "missing.tsv")))
    (tmp_path / "empty.tsv").write_text("  \n")
    with pytest.raises(DataError, match=r"empty\.tsv: the caption corpus is empty"):
        list(captions.read_captions(str(tmp_path / "empty.tsv")))
    (tmp_path / "latin.tsv").write_bytes("A caf\u00e9\turl\n".encode() + b"A man\xe9\turl\n")
    with pytest.raises(DataError, match=r"latin\.tsv: line 2: not UTF-8"):
        list(captions.read_captions(str(tmp_path / "latin.tsv")))
    (tmp_path / "plain.txt").write_text("A man on a horse.\n")
    with pytest.raises(DataError, match=r"plain\.txt: line 1: expected 'caption<TAB>url', found no tab"):
        list(captions.read_captions(str(tmp_path / "plain.txt")))
    (tmp_path / "bad.json").write_text('{"images": []}')
    with pytest.raises(DataError, match=r"bad\.json: JSON without a list of captions"):
        list(captions.read_captions(str(tmp_path / "bad.json")))
    (tmp_path / "record.json").write_text('[{"caption": 3}]')
    with pytest.raises(DataError, match=r"record\.json: record 0: expected an object with a string 'caption'"):
        list(captions.read_captions(str(tmp_path / "record.json")))


def test_the_rows_that_need_no_training_rtp_beating_random(tmp_path):
    config = demo.get_config("tiny")
    assert results.captions_path(config, str(tmp_path), "") == str(tmp_path / "world" / "captions.json")
    rows = results.run_all(config, str(tmp_path), ["rtp", "random"])
    assert list(rows) == ["Random", "RTP"] and rows["RTP"]["auc"] > 2 * rows["Random"]["auc"]
    assert all(row["wall_s"] >= 0 for row in rows.values())
    assert json.load(open(tmp_path / "results.json")).keys() == rows.keys()
    text = (tmp_path / "results.md").read_text()
    assert "| RTP |" in text and "| RTP | 12.30 | 23.67 | 16.65 | 4.10 | 8.62 | 7.34 |" in text  # The paper's, beside.
    assert (tmp_path / "pr_curves.png").is_file()
