import numpy as np
import pytest

from cqshift_basicsr.archs.cqshift_arch import CQShiftNet
from cqshift_basicsr.choices import check_choice
from cqshift_basicsr.data.degradations import FaceDegradation
from cqshift_basicsr.metrics.mse_metric import calculate_mse


def test_a_valid_choice_is_returned():
    assert check_choice('mode', 'area', ('bicubic', 'area')) == 'area'
    assert check_choice('stride', 2, (1, 2, 4)) == 2
    assert check_choice('net', 'vgg', {'alex': 1, 'vgg': 2}) == 'vgg'


def test_an_invalid_choice_names_the_option_the_choices_and_the_value():
    with pytest.raises(ValueError, match=r"^shift_mode must be one of 'per_image', 'global'; got 'batch'$"):
        check_choice('shift_mode', 'batch', ('per_image', 'global'))
    with pytest.raises(ValueError, match=r'^stem_stride must be one of 1, 2, 4; got 3$'):
        check_choice('stem_stride', 3, (1, 2, 4))
    with pytest.raises(ValueError, match=r"^net must be one of 'alex', 'vgg'; got \['vgg'\]$"):
        check_choice('net', ['vgg'], {'alex': 1, 'vgg': 2})  # unhashable against a dict: an error, not a TypeError


def test_a_near_miss_gets_a_hint():
    with pytest.raises(ValueError, match=r"got 'bicubc'; did you mean `bicubic`\?"):
        check_choice('mode', 'bicubc', ('bicubic', 'bilinear', 'area'))


def test_the_package_uses_it():
    with pytest.raises(ValueError, match="^shift_mode must be one of 'per_image', 'global'; got 'batch'$"):
        CQShiftNet(64, shift_mode='batch')
    with pytest.raises(ValueError, match="^degradation option upsample must be one of 'bicubic'.*; got 'cubic'"):
        FaceDegradation('mild', upsample='cubic')
    with pytest.raises(ValueError, match="^input_order must be one of 'HWC', 'CHW'; got 'HCW'"):
        calculate_mse(np.zeros((4, 4, 3)), np.zeros((4, 4, 3)), input_order='HCW')
