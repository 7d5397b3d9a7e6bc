"""Cell anchors and anchor grids (REFERENCE.md §3)."""

import numpy as np
import pytest

from mrcnn_np.ops import AnchorGenerator, generate_anchors

# REFERENCE.md §3: sizes 32..512, ratios (0.5, 1, 2), after float32 rounding half-to-even
CELL_ANCHORS = {
    32: [[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]],
    64: [[-45, -23, 45, 23], [-32, -32, 32, 32], [-23, -45, 23, 45]],
    128: [[-91, -45, 91, 45], [-64, -64, 64, 64], [-45, -91, 45, 91]],
    256: [[-181, -91, 181, 91], [-128, -128, 128, 128], [-91, -181, 91, 181]],
    512: [[-362, -181, 362, 181], [-256, -256, 256, 256], [-181, -362, 181, 362]],
}


@pytest.mark.parametrize("size", sorted(CELL_ANCHORS))
def test_cell_anchors_table(size):
    # e.g. size 32, ratio 0.5: h_ratio = sqrt(0.5) = 0.7071, w_ratio = 1.4142,
    # w = 45.25, h = 22.63 -> [-22.63, -11.31, 22.63, 11.31] -> rounded [-23, -11, 23, 11]
    anchors = generate_anchors((size,), (0.5, 1.0, 2.0))
    assert anchors.dtype == np.float32
    np.testing.assert_array_equal(anchors, np.float32(CELL_ANCHORS[size]))


def test_cell_anchors_round_half_to_even_and_ratio_major_order():
    # size 3, ratio 1 -> +-1.5 -> 2 (even); size 5 -> +-2.5 -> 2 (even), not 3
    np.testing.assert_array_equal(generate_anchors((3, 5), (1.0,)),
                                  np.float32([[-2, -2, 2, 2]] * 2))
    # ratio-major: (r=1, s=16), (r=1, s=32), (r=4, s=16), (r=4, s=32); for r = 4,
    # h_ratio = 2 and w_ratio = 0.5, so s=16 gives w = 8, h = 32 -> [-4, -16, 4, 16]
    np.testing.assert_array_equal(
        generate_anchors((16, 32), (1.0, 4.0)),
        np.float32([[-8, -8, 8, 8], [-16, -16, 16, 16], [-4, -16, 4, 16], [-8, -32, 8, 32]]),
    )


def test_grid_on_padded_64x96_image():
    # padded 64x96 -> FPN levels 16x24, 8x12, 4x6, 2x3 and 'pool' 1x2 (ceil(2/2) x ceil(3/2))
    feature_sizes = [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    anchors, per_level = AnchorGenerator()((64, 96), feature_sizes)
    # H*W*3 per level: 1152, 288, 72, 18, 6
    assert per_level == [1152, 288, 72, 18, 6]
    assert anchors.shape == (1536, 4) and anchors.dtype == np.float32

    # level '0' (stride 4x4): the first cell (0, 0) is centred on the image origin
    np.testing.assert_array_equal(anchors[:3], np.float32(CELL_ANCHORS[32]))
    # level '0', cell (y=1, x=2), ratio 1: [-16,-16,16,16] + (x*4, y*4) = + (8, 4)
    np.testing.assert_array_equal(anchors[(1 * 24 + 2) * 3 + 1], np.float32([-8, -12, 24, 20]))

    # level '3' is 2x3 with stride 64//2 = 32 and 96//3 = 32; cell (y=1, x=2), ratio 1:
    # [-128, -128, 128, 128] + (x*32, y*32) = + (64, 32)
    level3 = anchors[1152 + 288 + 72:1152 + 288 + 72 + 18]
    np.testing.assert_array_equal(level3[(1 * 3 + 2) * 3 + 1], np.float32([-64, -96, 192, 160]))

    # 'pool' is 1x2: stride_h = 64 // 1 = 64 but stride_w = 96 // 2 = 48. Cell x=1 is shifted
    # by (48, 0): e.g. [-362, -181, 362, 181] -> [-314, -181, 410, 181]
    pool = anchors[-6:]
    expected = np.float32(CELL_ANCHORS[512] + [
        [-362 + 48, -181, 362 + 48, 181],
        [-256 + 48, -256, 256 + 48, 256],
        [-181 + 48, -362, 181 + 48, 362],
    ])
    np.testing.assert_array_equal(pool, expected)


def test_strides_come_from_the_padded_size_by_integer_division():
    generator = AnchorGenerator(sizes=((8,),), aspect_ratios=((1.0,),))
    # 100 // 3 = 33, 50 // 3 = 16: centres at x = 0, 16, 32 and y = 0, 33, 66
    anchors, _ = generator((100, 50), [(3, 3)])
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    np.testing.assert_array_equal(centres[:, 0], np.float32([0, 16, 32] * 3))
    np.testing.assert_array_equal(centres[:, 1], np.float32([0] * 3 + [33] * 3 + [66] * 3))


def test_cache_returns_the_same_read_only_array():
    generator = AnchorGenerator()
    sizes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    first, counts = generator((32, 32), sizes)
    second, _ = generator((32, 32), sizes)
    assert first is second
    counts.append(0)  # the returned list is a copy
    assert generator((32, 32), sizes)[1] == [192, 48, 12, 3, 3]
    with pytest.raises(ValueError):
        first[0, 0] = 1.0
    assert generator.num_anchors_per_location() == [3] * 5


def test_flat_sizes_and_ratios_are_shorthand():
    shorthand = AnchorGenerator(sizes=(32, 64), aspect_ratios=(0.5, 1.0, 2.0))
    assert shorthand.sizes == ((32,), (64,))
    assert shorthand.aspect_ratios == ((0.5, 1.0, 2.0),) * 2
    np.testing.assert_array_equal(shorthand.cell_anchors[1], np.float32(CELL_ANCHORS[64]))


def test_anchor_generator_rejects_bad_input():
    generator = AnchorGenerator()
    with pytest.raises(ValueError, match="5 levels"):
        generator((64, 64), [(16, 16)])
    with pytest.raises(ValueError, match="larger than the image"):
        generator((4, 4), [(8, 8)] * 5)
    with pytest.raises(ValueError, match="image_size"):
        generator((64,), [(16, 16)] * 5)
    with pytest.raises(ValueError, match="one entry per level"):
        AnchorGenerator(sizes=((32,),), aspect_ratios=((1.0,),) * 2)
    with pytest.raises(ValueError, match="positive"):
        generate_anchors((32,), (0.0,))


@pytest.mark.parity
@pytest.mark.parametrize(
    ("image_size", "feature_sizes"),
    [
        ((256, 320), [(64, 80), (32, 40), (16, 20), (8, 10), (4, 5)]),
        ((64, 96), [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]),
    ],
)
def test_anchor_generator_matches_torchvision(image_size, feature_sizes):
    torch = pytest.importorskip("torch")
    anchor_utils = pytest.importorskip("torchvision.models.detection.anchor_utils")
    image_list_module = pytest.importorskip("torchvision.models.detection.image_list")
    theirs = anchor_utils.AnchorGenerator(((32,), (64,), (128,), (256,), (512,)),
                                          ((0.5, 1.0, 2.0),) * 5)
    images = image_list_module.ImageList(torch.zeros(2, 3, *image_size), [image_size] * 2)
    features = [torch.zeros(2, 8, h, w) for h, w in feature_sizes]
    expected = theirs(images, features)
    anchors, per_level = AnchorGenerator()(image_size, feature_sizes)
    # integer-valued float32 sums: exactly equal
    for per_image in expected:
        np.testing.assert_array_equal(anchors, per_image.numpy())
    assert per_level == [h * w * 3 for h, w in feature_sizes]
