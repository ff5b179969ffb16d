"""The paper's three LQ levels: sizes, noise level, integer JPEG, determinism, overrides, errors."""
import cv2
import numpy as np
import pytest

from cqshift_basicsr.data.degradations import DEGRADATION_LEVELS, FaceDegradation, resize_image


def smooth_face(size, seed=0):
    """A smooth random colour image (uint8 BGR), so blur/JPEG/aliasing differences are small but measurable."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
    return np.clip(cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def test_level_table_lists_the_three_levels():
    assert set(DEGRADATION_LEVELS) == {'mild', 'moderate', 'severe'}
    assert DEGRADATION_LEVELS['mild']['jpeg_quality'] == [90, 95]
    assert DEGRADATION_LEVELS['moderate']['noise_sigma'] == [20, 25]
    assert DEGRADATION_LEVELS['severe']['noise_sigma'] == [10, 15]
    assert DEGRADATION_LEVELS['severe']['downsample'] == 'bilinear'


@pytest.mark.parametrize('level', sorted(DEGRADATION_LEVELS))
@pytest.mark.parametrize('size', [64, 256])
def test_output_sizes_and_types(level, size):
    small, lq, params = FaceDegradation(level)(smooth_face(size), np.random.default_rng(0))
    assert small.shape == (size // 8, size // 8, 3) and small.dtype == np.uint8
    assert lq.shape == (size, size, 3) and lq.dtype == np.uint8
    assert set(params) == {'scale', 'blur_sigma', 'blur_kernel_size', 'noise_sigma', 'jpeg_quality'}
    assert all(isinstance(v, (int, float)) for v in params.values())


def test_scale_option_and_float_input():
    img = smooth_face(64)
    small, lq, params = FaceDegradation('mild', scale=4)(img.astype(np.float32) / 255, np.random.default_rng(0))
    assert small.shape == (16, 16, 3) and lq.shape == (64, 64, 3) and params['scale'] == 4
    # float [0, 1] input gives the same bytes as the uint8 image it came from
    small_u8, _, _ = FaceDegradation('mild', scale=4)(img, np.random.default_rng(0))
    assert np.array_equal(small, small_u8)


def test_indivisible_size_is_a_clear_error():
    with pytest.raises(ValueError, match='not divisible by the degradation scale 8'):
        FaceDegradation('mild')(smooth_face(60), np.random.default_rng(0))


@pytest.mark.parametrize('level, lo, hi', [('moderate', 20, 25), ('severe', 10, 15)])
def test_noise_level_measured_on_flat_grey(level, lo, hi):
    flat = np.full((512, 512, 3), 128, np.uint8)
    for seed in range(3):
        small, _, params = FaceDegradation(level)(flat, np.random.default_rng(seed))
        assert small.shape == (64, 64, 3)
        measured = small.astype(np.float64).std()
        assert lo <= params['noise_sigma'] <= hi
        # 12288 samples: the std estimate is within ~1.5 % ; rounding adds 1/12 of variance
        assert abs(measured - params['noise_sigma']) < 0.05 * params['noise_sigma']
        assert lo * 0.95 <= measured <= hi * 1.05
        assert abs(small.astype(np.float64).mean() - 128) < 1.0


def test_no_noise_on_flat_grey_for_mild():
    flat = np.full((512, 512, 3), 128, np.uint8)
    small, lq, params = FaceDegradation('mild')(flat, np.random.default_rng(0))
    assert params['noise_sigma'] == 0.0 and small.std() < 1.0


def test_jpeg_is_applied_at_the_sampled_integer_quality():
    img = smooth_face(256, seed=3)
    qualities = set()
    for seed in range(12):
        small, _, params = FaceDegradation('mild')(img, np.random.default_rng(seed))
        quality = params['jpeg_quality']
        assert isinstance(quality, int) and 90 <= quality <= 95
        qualities.add(quality)
        clean = resize_image(img, (32, 32))
        _, buffer = cv2.imencode('.jpg', clean.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert np.array_equal(small, cv2.imdecode(buffer, cv2.IMREAD_COLOR))
    assert len(qualities) > 1  # quality is sampled per image


@pytest.mark.parametrize('mode', ['bicubic', 'bilinear', 'area'])
def test_downsampling_is_antialiased(mode):
    # White noise (std ~74) averages out under a proper x8 reduction (std ~6-9); cv2 INTER_CUBIC point-samples
    # 4x4 taps and keeps std ~53, INTER_LINEAR ~37.
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3)).astype(np.uint8)
    small, _, _ = FaceDegradation(None, downsample=mode)(noise, np.random.default_rng(0))
    assert small.astype(np.float64).std() < 12


def test_same_seed_same_bytes_different_seed_differs():
    img = smooth_face(64)
    for level in DEGRADATION_LEVELS:
        a = FaceDegradation(level)(img, np.random.default_rng(7))
        b = FaceDegradation(level)(img, np.random.default_rng(7))
        c = FaceDegradation(level)(img, np.random.default_rng(8))
        assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes() and a[2] == b[2]
        assert a[2] != c[2]


def test_explicit_params_override_the_level():
    degradation = FaceDegradation.from_opt({'level': 'severe', 'noise_sigma': 5, 'blur_sigma': None,
                                            'downsample': 'area', 'blur_kernel_size': 'auto'})
    assert degradation.blur_sigma is None and degradation.noise_sigma == [5.0, 5.0]
    assert degradation.downsample == 'area'
    _, _, params = degradation(smooth_face(64), np.random.default_rng(0))
    assert params['blur_sigma'] == 0.0 and params['noise_sigma'] == 5.0
    # overrides leave the shared level table untouched
    assert DEGRADATION_LEVELS['severe']['blur_sigma'] == [1, 3]
    # the level's other defaults stay
    assert FaceDegradation.from_opt({'level': 'mild', 'scale': 4}).jpeg_quality == [90, 95]


def test_severe_blur_sigma_and_auto_kernel():
    degradation = FaceDegradation('severe', blur_kernel_size='auto')
    _, _, params = degradation(smooth_face(64), np.random.default_rng(0))
    assert 1 <= params['blur_sigma'] <= 3
    assert params['blur_kernel_size'] % 2 == 1 and params['blur_kernel_size'] >= 6 * params['blur_sigma'] + 1
    assert FaceDegradation('severe')(smooth_face(64), np.random.default_rng(0))[2]['blur_kernel_size'] == 21


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="Unknown degradation level 'extreme'"):
        FaceDegradation.from_opt({'level': 'extreme'})
    with pytest.raises(ValueError, match='Unknown degradation option'):
        FaceDegradation.from_opt({'level': 'mild', 'noise': 3})
    with pytest.raises(ValueError, match='jpeg_quality'):
        FaceDegradation(jpeg_quality=[90.5, 95])
    with pytest.raises(ValueError, match='blur_kernel_size'):
        FaceDegradation('severe', blur_kernel_size=20)
    with pytest.raises(ValueError, match='downsample'):
        FaceDegradation('mild', downsample='nearest')


def test_a_list_of_levels_mixes_them_per_image():
    from cqshift_basicsr.data.degradations import MixedFaceDegradation
    mixed = FaceDegradation.from_opt({'level': ['mild', 'moderate', 'severe'], 'scale': 4})
    assert isinstance(mixed, MixedFaceDegradation) and mixed.scale == 4
    img = np.full((64, 64, 3), 128, np.uint8)
    rng = np.random.default_rng(0)
    chosen = set()
    for _ in range(30):
        small, lq, params = mixed(img, rng)
        assert small.shape == (16, 16, 3) and lq.shape == (64, 64, 3)
        chosen.add(params['level_index'])
        if params['level_index'] == 0:
            assert 90 <= params['jpeg_quality'] <= 95 and params['noise_sigma'] == 0
        else:
            assert params['noise_sigma'] > 0
    assert chosen == {0, 1, 2}
