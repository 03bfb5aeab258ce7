"""The release's two pickles, checked as the authors' reader uses them.

Their loader (load_cached_image_ids) reads both files of a split and, for every key (subject, object)
of {split}_image_sort_by_IoU_and_distance.pkl, maps the two VG-150 class ids through vg_dict's
label_to_vg_150_idx to a bag key, and every entry of the key's list through
{split}_image_idx_to_id.pkl: the lists hold image indices (keys of that map, the lines of the split's
features file as release_write writes them), the map gives image ids. Each bag of bag_data is then
looked up in the result. Anything that would raise there is a DataError naming the file, the bag key
and the entry; what their reader only carries along (which ids the map gives) is counted.
"""

from __future__ import annotations

import os

from clever_jax.data.jsonio import DataError
from clever_jax.data.plain_pickle import load_pickle


def _index_map(path: str) -> dict:
    """{image index: image id} of an image_idx_to_id pickle (a dict, or a list indexed from 0)."""
    table = load_pickle(path)
    if not isinstance(table, dict | list):
        raise DataError(f"{path}: expected a dict from image index to image id, found a {type(table).__name__}")
    table = table if isinstance(table, dict) else dict(enumerate(table))
    bad = next(((k, v) for k, v in table.items() if not isinstance(v, int | str)), None)
    if bad is not None:
        raise DataError(f"{path}: entry {bad[0]!r:.40} is {bad[1]!r:.40}: expected an image id (integer or string)")
    return table


def check(sort_path: str, index_path: str, bags: dict[tuple[int, int], str], bag_images: dict[str, list[int]],
          split_images: set[int], vg150: dict[int, int]) -> dict[str, int]:
    """Checks one split's pickles against each other and the split's bags; returns counts for stats.json.

    Args:
      sort_path, index_path: the split's image_sort and image_idx_to_id pickles (both or neither present).
      bags: (subject class, object class) -> bag key of each bag of the split.
      bag_images: bag key -> image ids of its pairs_data instances, in listed order.
      split_images: image ids of the split's features file.
      vg150: VG-150 class id -> class (read_vocab_map).
    """
    present = [os.path.isfile(p) for p in (sort_path, index_path)]
    if not any(present):
        return {}
    if not all(present):
        have, lack = (sort_path, index_path) if present[0] else (index_path, sort_path)
        raise DataError(f"{have}: the authors' reader reads it together with {lack}, which is missing")
    index = _index_map(index_path)
    table = load_pickle(sort_path)
    if not isinstance(table, dict):
        raise DataError(f"{sort_path}: expected a dict from (subject, object) VG-150 class ids to lists of image "
                        f"indices, found a {type(table).__name__}")
    differing, covered = 0, set()
    for key, indices in table.items():
        if not (isinstance(key, tuple) and len(key) == 2 and all(type(k) is int for k in key)
                and isinstance(indices, list)):
            raise DataError(f"{sort_path}: key {key!r:.40}: expected a pair of VG-150 class ids -> a list of image "
                            "indices")
        unknown = [k for k in key if k not in vg150]
        if unknown:
            raise DataError(f"{sort_path}: key {key}: VG-150 class id {unknown[0]} is not in vg_dict.json's "
                            "label_to_vg_150_idx")
        pair = (vg150[key[0]], vg150[key[1]])
        bag = bags.get(pair)
        where = f"{sort_path}: key {key}" + (f" (bag {bag!r})" if bag else "")
        for n, entry in enumerate(indices):
            if not isinstance(entry, int | str) or entry not in index:
                raise DataError(f"{where}, entry {n}: {entry!r:.40} is not an image index of {index_path}")
        if bag is not None:
            covered.add(pair)
            differing += [str(index[i]) for i in indices] != [str(i) for i in dict.fromkeys(bag_images[bag])]
    missing = [key for pair, key in bags.items() if pair not in covered]
    if missing:
        raise DataError(f"{sort_path}: {len(missing)} bags of the split have no key, e.g. {missing[:3]}; the authors' "
                        "reader looks up every bag")
    return {"image_sort_bags": len(table), "image_sort_bags_of_this_split": len(covered),
            "image_sort_bags_not_listing_the_pairs_data_images": differing,
            "image_idx_to_id_entries": len(index),
            "image_idx_to_id_not_of_this_split": sum(not str(v).isdigit() or int(v) not in split_images
                                                     for v in index.values())}
