import math, pytest, torch
from fastnorm.study.shift import SHIFT_EFFECTS, parse_shift, parse_shifts, Shift

SR = 16000

def tone(hz, n=SR, amp=.5):
    t = torch.arange(n) / SR
    return (amp * torch.sin(2 * math.pi * hz * t))[None, None]

def rms(x): return x.pow(2).mean().sqrt()

def test_gain_is_exact_and_input_untouched():
    x = tone(440)
    before = x.clone()
    torch.testing.assert_close(parse_shift('gain:-20')(x, SR), x * .1)
    assert torch.equal(x, before) and parse_shift('gain:-20').name == 'gain:-20'

def test_tilt_and_band_change_level_by_frequency():
    tilt = parse_shift('tilt:-3')
    assert float(rms(tilt(tone(1000), SR)) / rms(tone(1000))) == pytest.approx(1, abs=1e-5)  # 1 kHz is the pivot
    assert 20 * math.log10(float(rms(tilt(tone(4000), SR)) / rms(tone(4000)))) == pytest.approx(-6, abs=1e-3)  # two octaves up
    band = parse_shift('band:2000:4000:-12')
    assert 20 * math.log10(float(rms(band(tone(3000), SR)) / rms(tone(3000)))) == pytest.approx(-12, abs=1e-3)
    torch.testing.assert_close(band(tone(500), SR), tone(500), atol=1e-4, rtol=0)  # float32 FFT round trip

def test_noise_hits_the_snr_and_is_seeded():
    x = torch.cat([tone(440), tone(880, amp=.05)])
    sh = parse_shift('noise:10')
    y = sh(x, SR)
    snr = 10 * torch.log10(x.pow(2).mean((1, 2)) / (y - x).pow(2).mean((1, 2)))
    torch.testing.assert_close(snr, torch.full((2,), 10.), atol=1e-4, rtol=0)
    assert torch.equal(y, sh(x, SR)) and not torch.equal(y, parse_shift('noise:10', seed=1)(x, SR))
    assert parse_shift('noise:10:pink').name == 'noise:10:pink'

def test_resample_chain_removes_what_the_middle_rate_cannot_hold():
    sh = parse_shift('resample:8000')
    low, high = tone(1000), tone(6000)
    assert float(rms(sh(low, SR) - low)) < 5e-3 and float(rms(sh(high, SR))) < .01 * float(rms(high))
    assert sh(low, SR).shape == low.shape
    with pytest.raises(ValueError, match='middle rate must be below'): parse_shift('resample:16000')(low, SR)

@pytest.mark.parametrize('spec,msg', [
    ('loud:3', r"Unknown shift 'loud:3': choose from gain:DB"),
    ('gain', r"Shift 'gain' is not of the form gain:DB"),
    ('gain:x', r"Shift 'gain:x' is not of the form gain:DB"),
    ('noise:10:blue', r"not of the form noise:SNR_DB\[:white\|pink\]"),
    ('band:4000:2000:-3', r'the band needs 0 <= LOW_HZ < HIGH_HZ'),
    ('resample:8000.5', r'HZ must be a positive integer'),
])
def test_bad_shift_names(spec, msg):
    with pytest.raises(ValueError, match=msg): parse_shift(spec)

def test_parse_shifts_list_and_duplicates():
    assert [s.name for s in parse_shifts('gain:-20, noise:10')] == ['gain:-20', 'noise:10']
    assert parse_shifts('') == [] and parse_shifts(None) == []
    with pytest.raises(ValueError, match='--shift lists gain:-20 twice'): parse_shifts(['gain:-20', 'gain:-20.0'])
    assert isinstance(parse_shifts(['tilt:-3'])[0], Shift)

def test_effect_name_and_column():
    sh = parse_shift('band:2000:4000:-12')
    assert (sh.effect, sh.args, sh.name, sh.column) == ('band', (2000., 4000., -12.), 'band:2000:4000:-12', 'acc@band:2000:4000:-12')
    assert sorted(SHIFT_EFFECTS) == ['band', 'gain', 'noise', 'resample', 'tilt']
    with pytest.raises(ValueError, match="Unknown shift effect 'loud'"): Shift('loud', (1.,))(tone(440), SR)

def test_shifts_registry_is_what_parse_shift_reads(monkeypatch):
    "A new effect is one `SHIFTS` entry: parsed, checked and applied from it; `SHIFT_EFFECTS` follows"
    from fastnorm.study.shift import SHIFTS, ShiftEffect
    assert SHIFT_EFFECTS == {k: e.form for k, e in SHIFTS.items()} and SHIFT_EFFECTS['noise'] == 'noise:SNR_DB[:white|pink]'
    half = ShiftEffect('mute:FRAC', lambda x, sr, args, noise: x * (1 - args[0]), 'mutes a fraction',
                       check=lambda a: None if 0 <= a[0] <= 1 else 'FRAC must lie in [0, 1]')
    monkeypatch.setitem(SHIFTS, 'mute', half)
    x = tone(440)
    assert torch.allclose(parse_shift('mute:0.25')(x, SR), x * .75)
    with pytest.raises(ValueError, match=r"Shift 'mute:2': FRAC must lie in \[0, 1\]"): parse_shift('mute:2')
    with pytest.raises(ValueError, match=r"Shift 'mute:1:2' is not of the form mute:FRAC"): parse_shift('mute:1:2')
    monkeypatch.delitem(SHIFTS, 'mute')
    with pytest.raises(ValueError, match=r"Unknown shift 'mute:1': choose from gain:DB, .*resample:HZ$"): parse_shift('mute:1')
