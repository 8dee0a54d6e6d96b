"fastnorm.checks: each check returns the value in its canonical type, and each error names the argument and quotes the value"
import math
import pytest
import torch
from fastnorm.checks import (check_frac, check_int, check_positive, check_range, check_choice, check_mask_value,
                             check_batch4d, check_number)

def test_values_come_back_canonical():
    assert check_frac('p', 1) == 1. and type(check_frac('p', 1)) is float and check_frac('p', 0) == 0.
    assert check_int('n', 3.0) == 3 and type(check_int('n', 3.0)) is int and check_int('n', 1, lo=1) == 1
    assert check_positive('x', 2) == 2. and type(check_positive('x', 2)) is float
    assert check_range('snr', 5) == (5., 5.) and check_range('snr', [1, 2]) == (1., 2.)
    assert check_choice('norm', None, ('slaney', None)) is None
    assert check_mask_value('mean') == 'mean' and check_mask_value(0) == 0. and type(check_mask_value(0)) is float
    check_batch4d(torch.zeros(1, 1, 2, 3), 'T')
    assert check_number('top_db', 0, lo=0) == 0. and type(check_number('top_db', 0, lo=0)) is float
    assert check_number('m', 0.5, lo=0, hi=1, hi_open=True) == .5 and check_number('x', -1e300) == -1e300
    assert check_number('n', 4.0, lo=1, integer=True) == 4 and type(check_number('n', 4.0, integer=True)) is int
    t = torch.tensor([0., .5, 1.])
    assert check_number('s', t, 0, 1) is t  # a tensor comes back as it is, every value checked

@pytest.mark.parametrize('call, msg', [
    (lambda: check_frac('p', 1.5), r"`p` must be a finite number in \[0, 1\] \(1.5 given\)"),
    (lambda: check_frac('p', True), r"`p` must be a finite number in \[0, 1\] \(True given\)"),
    (lambda: check_frac('p', 0, lo_open=True), r"`p` must be a finite number in \(0, 1\] \(0 given\)"),
    (lambda: check_frac('lam', math.nan), r"`lam` must be a finite number in \[0, 1\] \(nan given\)"),
    (lambda: check_int('n', 2.5), r"`n` must be an integer >= 0 \(2.5 given\)"),
    (lambda: check_int('n', 0, lo=1), r"`n` must be an integer >= 1 \(0 given\)"),
    (lambda: check_int('n', '3'), r"`n` must be an integer >= 0 \('3' given\)"),
    (lambda: check_int('n', math.nan), r"`n` must be an integer >= 0 \(nan given\)"),
    (lambda: check_int('n', math.inf, lo=1), r"`n` must be an integer >= 1 \(inf given\)"),
    (lambda: check_positive('eps', math.nan), r"`eps` must be a positive number \(nan given\)"),
    (lambda: check_positive('alpha', 0), r"`alpha` must be a positive number \(0 given\)"),
    (lambda: check_positive('alpha', math.inf), r"`alpha` must be a positive number \(inf given\)"),
    (lambda: check_range('snr', (3, 1)), r"`snr` must be a number or a \(low, high\) pair .* \(\(3, 1\) given\)"),
    (lambda: check_range('g', 70, hi=60), r"`g` must be a number or a \(low, high\) pair with -inf <= low <= high <= 60"),
    (lambda: check_choice('norm', 'area', ('slaney', None)), r"`norm` must be one of \('slaney', None\) \('area' given\)"),
    (lambda: check_number('momentum', 1, lo=0, hi=1, hi_open=True), r"`momentum` must be a finite number in \[0, 1\) \(1 given\)"),
    (lambda: check_number('rolloff', 0, lo=0, hi=1, lo_open=True), r"`rolloff` must be a finite number in \(0, 1\] \(0 given\)"),
    (lambda: check_number('top_db', math.nan, lo=0), r"`top_db` must be a finite number >= 0 \(nan given\)"),
    (lambda: check_number('db', 0, hi=0, hi_open=True), r"`db` must be a finite number < 0 \(0 given\)"),
    (lambda: check_number('x', math.inf), r"`x` must be a finite number \(inf given\)"),
    (lambda: check_number('x', True), r"`x` must be a finite number \(True given\)"),
    (lambda: check_number('n', 2.5, lo=1, integer=True), r"`n` must be an integer >= 1 \(2.5 given\)"),
    (lambda: check_number('k', 7, lo=0, hi=6, integer=True), r"`k` must be an integer in \[0, 6\] \(7 given\)"),
    (lambda: check_number('gain', -1, lo=0), r"`gain` must be a finite number >= 0 \(-1 given\)"),
    (lambda: check_number('s', torch.tensor([.5, 2.]), 0, 1),
     r"`s` must be a finite number in \[0, 1\] \(\[0.5, 2.0\] given\)"),
    (lambda: check_number('s', torch.full((5,), math.nan), 0, 1),
     r"`s` must be a finite number in \[0, 1\] \(\[nan, nan, nan, nan\]... given\)"),
    (lambda: check_mask_value(math.nan), r"`mask_value` must be a finite number or 'mean' \(nan given\)"),
    (lambda: check_batch4d(torch.zeros(2, 3, 4), 'FreqMask', 'use batch_tfms'),
     r"FreqMask expects a batch `\[B,C,F,T\]` \(shape \[2, 3, 4\] given\): use batch_tfms"),
])
def test_errors_name_the_argument_and_value(call, msg):
    with pytest.raises(ValueError, match=msg): call()
