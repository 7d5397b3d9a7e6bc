"""CocoDataset: the export round trip, pycocotools parity, bad records, keypoints, file checks."""

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from mrcnn_np.data import CocoDataset, ImageLoadError, ShapesDataset, export_coco
from mrcnn_np.eval import poly_to_rle, rle_decode, rle_encode

H, W = 32, 40
EXIF_ORIENTATION = 0x0112


def write_png(folder, name, h=H, w=W, mode="RGB"):
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(len(name)).integers(0, 256, (h, w, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(folder / name)
    return folder / name


def write_json(tmp_path, images, annotations, categories, name="annotations.json"):
    path = tmp_path / name
    path.write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": categories}
    ))
    return path


def image_record(image_id, file_name, h=H, w=W):
    return {"id": image_id, "file_name": file_name, "height": h, "width": w}


def polygon_ann(ann_id, image_id, polygon, category_id=1, bbox=(1, 1, 10, 10), **extra):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id,
            "segmentation": polygon, "bbox": list(bbox), "area": 50.0, "iscrowd": 0, **extra}


def quiet_coco(path):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress
        return COCO(str(path))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes_coco")
    dataset = ShapesDataset(12, image_size=(36, 52), seed=4)
    return dataset, export_coco(dataset, folder), folder / "images"


# ---- round trip and parity ------------------------------------------------------------------


def test_export_then_load_gives_back_the_same_items(exported):
    shapes, annotation_file, image_folder = exported
    coco = CocoDataset(annotation_file, image_folder)
    assert coco.report.clean and len(coco) == len(shapes)
    assert coco.classes == shapes.classes == ("circle", "square", "triangle")
    assert coco.class_names == shapes.class_names
    for index in range(len(shapes)):
        image_a, target_a = shapes[index]
        image_b, target_b = coco[index]
        np.testing.assert_array_equal(image_a, image_b)
        assert target_a.keys() == target_b.keys()
        for key, value in target_a.items():
            np.testing.assert_array_equal(value, target_b[key], err_msg=key)
            assert np.asarray(value).dtype == np.asarray(target_b[key]).dtype, key


@pytest.mark.parity
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under numpy 2
def test_pycocotools_reads_the_export_with_identical_masks(exported):
    pytest.importorskip("pycocotools")
    shapes, annotation_file, _ = exported
    coco = quiet_coco(annotation_file)
    for index in range(len(shapes)):
        _, target = shapes[index]
        ann_ids = coco.getAnnIds(imgIds=[target["image_id"]])
        anns = coco.loadAnns(ann_ids)
        assert len(anns) == len(target["labels"])
        for ann, mask, box, label in zip(anns, target["masks"], target["boxes"],
                                         target["labels"], strict=True):
            np.testing.assert_array_equal(coco.annToMask(ann), mask)
            x, y, w, h = ann["bbox"]
            np.testing.assert_array_equal([x, y, x + w, y + h], box)
            assert ann["area"] == mask.sum() and ann["category_id"] == label


@pytest.mark.parity
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under numpy 2
def test_polygons_and_rles_decode_like_pycocotools_ann_to_mask(tmp_path):
    mask_utils = pytest.importorskip("pycocotools.mask")
    write_png(tmp_path / "images", "a.png")
    blob = np.zeros((H, W), np.uint8)
    blob[5:20, 8:30] = 1
    blob[10:12, 12:40] = 1
    compressed = mask_utils.encode(np.asfortranarray(blob))
    compressed["counts"] = compressed["counts"].decode()
    # the uncompressed RLE of a 3x4 block at rows 2..4, columns 1..4 (column-major runs)
    runs = [H + 2, 3, H - 3, 3, H - 3, 3, H - 3, 3, H * W - 4 * H - 5]
    annotations = [
        polygon_ann(1, 1, [[2.3, 3.1, 17.8, 4.2, 9.5, 25.7]]),
        # two overlapping parts: their union, not their XOR
        polygon_ann(2, 1, [[0, 0, 20, 0, 20, 20, 0, 20], [10, 10, 35, 10, 35, 30, 10, 30]]),
        polygon_ann(3, 1, [[5.5, 5.5, 38.2, 7.1, 30.4, 31.9, -3.0, 20.0]]),  # partly outside
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [1, 2, 4, 3], "area": 12,
         "iscrowd": 1, "segmentation": {"size": [H, W], "counts": runs}},
        {"id": 5, "image_id": 1, "category_id": 1, "bbox": [8, 5, 32, 15], "area": 358,
         "iscrowd": 0, "segmentation": compressed},
    ]
    path = write_json(tmp_path, [image_record(1, "a.png")], annotations,
                      [{"id": 1, "name": "thing"}])
    dataset = CocoDataset(path, tmp_path / "images")
    assert dataset.report.clean
    _, target = dataset[0]
    coco = quiet_coco(path)
    for ann, mask in zip(coco.loadAnns([1, 2, 3, 4, 5]), target["masks"], strict=True):
        np.testing.assert_array_equal(mask, coco.annToMask(ann), err_msg=str(ann["id"]))
    expected_block = np.zeros((H, W), np.uint8)
    expected_block[2:5, 1:5] = 1
    np.testing.assert_array_equal(target["masks"][3], expected_block)
    np.testing.assert_array_equal(target["masks"][4], blob)
    np.testing.assert_array_equal(target["iscrowd"], [0, 0, 0, 1, 0])


def test_polygon_parts_are_unioned_and_a_flat_list_is_one_polygon(tmp_path):
    write_png(tmp_path / "images", "a.png")
    squares = [[0, 0, 10, 0, 10, 10, 0, 10], [5, 5, 15, 5, 15, 15, 5, 15]]
    annotations = [polygon_ann(1, 1, squares), polygon_ann(2, 1, squares[0])]
    path = write_json(tmp_path, [image_record(1, "a.png")], annotations, [{"id": 1}])
    masks = CocoDataset(path, tmp_path / "images").target(0)["masks"]
    # integer corners cover whole pixels: 100 + 100 minus the 5x5 overlap counted once
    # (an XOR of the parts would give 150)
    assert masks[0].sum() == 175
    np.testing.assert_array_equal(masks[1], rle_decode(poly_to_rle([squares[0]], H, W)))


# ---- bad records ----------------------------------------------------------------------------


@pytest.fixture
def broken(tmp_path):
    folder = tmp_path / "images"
    write_png(folder, "good.png")
    whole = write_png(folder, "whole.png").read_bytes()
    (folder / "corrupt.png").write_bytes(whole[: len(whole) // 2])  # a truncated PNG
    (folder / "junk.png").write_bytes(b"\x89PNG but not really" * 8)
    write_png(folder, "wrong_size.png", h=W, w=H)
    images = [
        image_record(1, "good.png"),
        image_record(2, "missing.png"),  # not on disk
        image_record(3, "corrupt.png"),
        image_record(4, "junk.png"),
        image_record(5, "wrong_size.png"),  # really 40x32, the record says 32x40
        image_record(1, "whole.png"),  # duplicate id
        {"id": 7, "height": H, "width": W},  # no file_name
    ]
    good = [[2, 2, 20, 2, 20, 20]]
    annotations = [
        polygon_ann(1, 1, good),
        polygon_ann(2, 1, good, bbox=(5, 5, 0, 10)),  # zero-area box
        polygon_ann(3, 1, good, category_id=99),  # unknown category
        polygon_ann(4, 1, [[50, 50, 60, 50, 60, 60]], bbox=(50, 50, 10, 10)),  # outside
        polygon_ann(5, 1, [[1, 1, 10, 10]]),  # a 2-point polygon
        polygon_ann(6, 2, good),  # on the missing image
        polygon_ann(7, 3, good),  # on the corrupt image
        polygon_ann(8, 42, good),  # image id not in images
        polygon_ann(9, 1, [[3, 3, 30, 3, 30, 25], [1, 1, 10, 10]]),  # one good part, one not
        {**polygon_ann(10, 1, None), "segmentation": {"size": [H + 1, W], "counts": "0"}},
        {**polygon_ann(11, 1, None, bbox=(8, 2, 30, 20)), "iscrowd": 1,
         "segmentation": rle_encode(np.ones((H, W), np.uint8))},
        {key: v for key, v in polygon_ann(12, 1, good).items() if key != "bbox"},  # no box
        polygon_ann(13, 1, good, bbox=(1, 1, 5, -2)),  # negative height
        "oops",  # not a record at all (position 13)
        polygon_ann(15, 1, good, bbox=(-20, -20, 10, 10)),  # box entirely outside
        polygon_ann(16, 1, []),  # no segmentation in a file with masks
        polygon_ann(17, 1, good, keypoints="x"),  # keypoints in a file without keypoints
        polygon_ann(18, 7, good),  # on the image record without a file_name
    ]
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"name": "no id"}]
    return write_json(tmp_path, images, annotations, categories), folder


def test_a_broken_file_loads_and_the_report_says_what_was_skipped(broken):
    path, folder = broken
    with pytest.warns(UserWarning, match="skipped 6 images, 14 annotations, 1 categories"):
        dataset = CocoDataset(path, folder)
    report = dataset.report
    assert report.skipped_images == {
        "missing_file": [2], "corrupt_file": [3, 4], "size_mismatch": [5],
        "duplicate_id": [1], "bad_record": [7],
    }
    assert report.skipped_annotations == {
        "invalid_box": [2, 12, 13], "unknown_category": [3], "polygon_outside_image": [4],
        "polygon_too_few_points": [5], "image_skipped": [6, 7, 18], "unknown_image": [8],
        "bad_segmentation": [10], "bad_record": ["#13"], "box_outside_image": [15],
        "missing_segmentation": [16],
    }
    assert report.skipped_categories == {"bad_record": ["#2"]}
    assert report.repaired_annotations == {"polygon_part_dropped": [9]}
    assert (report.images_kept, report.annotations_kept) == (1, 4)
    assert "no such file" in report.image_errors[2] and "corrupt.png" in report.image_errors[3]
    assert "is 40x32" in report.image_errors[5]
    text = str(report)
    for line in ("kept 1 images, 4 annotations", "corrupt_file (2): 3, 4",
                 "invalid_box (3): 2, 12, 13", "polygon_part_dropped (1): 9",
                 "image 2: image file"):
        assert line in text
    # what is left works, and each kept annotation is the one expected
    assert dataset.image_ids == [1] and dataset.classes == ("cat", "dog")
    image, target = dataset[0]
    assert image.shape == (H, W, 3)
    np.testing.assert_array_equal(target["iscrowd"], [0, 0, 1, 0])
    np.testing.assert_array_equal(target["masks"][1],  # ann 9 without its 2-point part
                                  rle_decode(poly_to_rle([[3, 3, 30, 3, 30, 25]], H, W)))
    np.testing.assert_array_equal(target["boxes"][2], [8, 2, 38, 22])
    assert "keypoints" not in target


def test_a_clean_file_gives_no_warning(exported, recwarn):
    _, annotation_file, image_folder = exported
    CocoDataset(annotation_file, image_folder)
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_unreadable_json_is_a_value_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        CocoDataset(bad, tmp_path)
    bad.write_text(json.dumps({"annotations": []}))
    with pytest.raises(ValueError, match="'images' list"):
        CocoDataset(bad, tmp_path)
    with pytest.raises(ValueError, match="check_images"):
        CocoDataset(bad, tmp_path, check_images="all")


# ---- what the file decides ------------------------------------------------------------------


def test_categories_get_contiguous_labels_in_id_order(tmp_path):
    write_png(tmp_path / "images", "a.png")
    write_png(tmp_path / "images", "b.png")
    categories = [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"},
                  {"id": 11, "name": "eleven"}]
    annotations = [polygon_ann(1, 5, [[1, 1, 9, 1, 9, 9]], category_id=11),
                   polygon_ann(2, 5, [[1, 1, 9, 1, 9, 9]], category_id=3),
                   polygon_ann(3, 2, [[1, 1, 9, 1, 9, 9]], category_id=7)]
    path = write_json(tmp_path, [image_record(5, "a.png"), image_record(2, "b.png")],
                      annotations, categories)
    dataset = CocoDataset(path, tmp_path / "images")
    assert dataset.category_ids == [3, 7, 11]  # label k is category_ids[k - 1]
    assert dataset.classes == ("three", "seven", "eleven")
    assert dataset.image_ids == [2, 5]  # ordered by id
    assert dataset[0][1]["image_id"] == 2
    np.testing.assert_array_equal(dataset.target(0)["labels"], [2])
    np.testing.assert_array_equal(dataset.target(1)["labels"], [3, 1])


def test_keypoints_come_as_n_k_3_with_zeros_when_absent(tmp_path):
    write_png(tmp_path / "images", "p.png")
    names = [f"kp{j}" for j in range(17)]
    keypoints = np.zeros((17, 3))
    keypoints[0] = [5, 6, 2]
    keypoints[16] = [30.5, 20, 1]
    annotations = [
        polygon_ann(1, 1, [[1, 1, 20, 1, 20, 20]], keypoints=keypoints.ravel().tolist(),
                    num_keypoints=2),
        polygon_ann(2, 1, [[1, 1, 20, 1, 20, 20]]),  # a person without keypoints
        polygon_ann(3, 1, [[1, 1, 20, 1, 20, 20]], keypoints=[1.0] * 50),  # 50 is not 17 * 3
    ]
    categories = [{"id": 1, "name": "person", "keypoints": names, "skeleton": [[1, 2]]}]
    path = write_json(tmp_path, [image_record(1, "p.png")], annotations, categories)
    with pytest.warns(UserWarning, match="skipped 1 annotations"):
        dataset = CocoDataset(path, tmp_path / "images")
    assert dataset.report.skipped_annotations == {"bad_keypoints": [3]}
    assert dataset.num_keypoints == 17 and dataset.keypoint_names == tuple(names)
    target = dataset.target(0)
    assert target["keypoints"].shape == (2, 17, 3) and target["keypoints"].dtype == np.float32
    np.testing.assert_array_equal(target["keypoints"][0], keypoints)
    np.testing.assert_array_equal(target["keypoints"][1], 0)


def test_boxes_are_clipped_and_area_falls_back_to_the_mask(tmp_path):
    write_png(tmp_path / "images", "a.png")
    ann = polygon_ann(1, 1, [[30, 20, 45, 20, 45, 40, 30, 40]], bbox=(30, 20, 15, 20))
    del ann["area"]
    path = write_json(tmp_path, [image_record(1, "a.png")], [ann], [{"id": 1, "name": "x"}])
    target = CocoDataset(path, tmp_path / "images").target(0)
    # [30, 20, 45, 40] clipped to the 40 x 32 image
    np.testing.assert_array_equal(target["boxes"], [[30, 20, 40, 32]])
    # the polygon covers columns 30..39 and rows 20..31 inside the image: 10 * 12
    np.testing.assert_array_equal(target["area"], [120.0])
    assert target["masks"][0].sum() == 120


def test_a_file_without_segmentations_gives_boxes_only(tmp_path):
    write_png(tmp_path / "images", "a.png")
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4],
                    "segmentation": []},  # as detection-only files often write
                   {"id": 2, "image_id": 1, "category_id": 1, "bbox": [5, 5, 2, 2], "area": 3}]
    path = write_json(tmp_path, [image_record(1, "a.png")], annotations, [{"id": 1}])
    dataset = CocoDataset(path, tmp_path / "images")
    target = dataset[0][1]
    assert not dataset.has_masks and "masks" not in target
    np.testing.assert_array_equal(target["boxes"], [[1, 2, 4, 6], [5, 5, 7, 7]])
    np.testing.assert_array_equal(target["area"], [12.0, 3.0])  # box area, or the file's
    assert dataset.classes == ("1",)  # a category without a name is named by its id


def test_an_image_without_annotations_has_empty_targets(tmp_path):
    write_png(tmp_path / "images", "a.png", mode="L")
    path = write_json(tmp_path, [image_record(1, "a.png")],
                      [polygon_ann(9, 2, [[1, 1, 9, 1, 9, 9]])], [{"id": 1, "name": "x"}])
    with pytest.warns(UserWarning, match="skipped 1 annotations"):
        image, target = CocoDataset(path, tmp_path / "images")[0]
    assert image.shape == (H, W, 3) and image.dtype == np.uint8  # from an L-mode file
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, H, W)
    assert target["labels"].dtype == np.int64 and target["area"].dtype == np.float32


# ---- image files ----------------------------------------------------------------------------


def test_check_images_modes(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "whole.jpg", quality=90)
    whole = (folder / "whole.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    path = write_json(tmp_path, [image_record(1, "cut.jpg")], [], [])
    # JPEG's verify() checks little: the header check lets a truncated JPEG through, and
    # reading it then fails with the file named
    dataset = CocoDataset(path, folder, check_images="header")
    with pytest.raises(ImageLoadError, match="cut.jpg"):
        dataset[0]
    with pytest.warns(UserWarning, match="skipped 1 images"):
        decoded = CocoDataset(path, folder, check_images="decode")
    assert len(decoded) == 0 and decoded.report.skipped_images == {"corrupt_file": [1]}


def test_exists_mode_skips_only_missing_files(tmp_path):
    folder = tmp_path / "images"
    write_png(folder, "ok.png")
    (folder / "junk.png").write_bytes(b"junk" * 10)
    images = [image_record(1, "ok.png"), image_record(2, "junk.png"),
              image_record(3, "gone.png")]
    path = write_json(tmp_path, images, [], [])
    with pytest.warns(UserWarning, match="skipped 1 images"):
        dataset = CocoDataset(path, folder, check_images="exists")
    assert dataset.image_ids == [1, 2]
    with pytest.raises(ImageLoadError, match="junk.png"):
        dataset[1]


def test_exif_orientation_decides_the_expected_size(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 8  # rotate 90 degrees counter-clockwise to display
    Image.new("RGB", (W, H), (200, 10, 10)).save(folder / "turned.jpg", exif=exif)
    images = [image_record(1, "turned.jpg", h=W, w=H),  # the displayed size: kept
              image_record(2, "turned.jpg", h=H, w=W),  # the stored size: skipped
              {"id": 3, "file_name": "turned.jpg"}]  # no size: read from the file
    path = write_json(tmp_path, images, [], [])
    with pytest.warns(UserWarning, match="skipped 1 images"):
        dataset = CocoDataset(path, folder)
    assert dataset.report.skipped_images == {"size_mismatch": [2]}
    assert [(info["height"], info["width"]) for info in dataset.images] == [(W, H), (W, H)]
    assert dataset[0][0].shape == dataset[1][0].shape == (W, H, 3)


def test_index_errors(exported):
    _, annotation_file, image_folder = exported
    dataset = CocoDataset(annotation_file, image_folder)
    with pytest.raises(IndexError, match="index"):
        dataset[len(dataset)]
    with pytest.raises(TypeError, match="index"):
        dataset["0"]
    np.testing.assert_array_equal(dataset[-1][0], dataset[len(dataset) - 1][0])
