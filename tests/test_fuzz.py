"""Property-based tests of every reader of outside bytes: audio (the PCM16 fast path and soundfile's), esc50.csv and
FSDD/class-folder listings, `--labels` .npy, noise folders, `StatsRecorder.load`, a feature cache folder, a comparison's
results.csv/config.json under --resume, an export's partial folder and manifests under --resume.

The property everywhere: the data is read exactly as the reference reads it (soundfile, pandas, numpy, the intact
file), or the error is fastnorm's own (`ValueError`, `AudioLoadError`, `FileNotFoundError`, `FileExistsError`: not a
subclass another library raises) with a message naming the file. Never `struct.error`, `IndexError`, `KeyError`, a
JSON or pandas parser error, or a silent wrong value. The budget is a hypothesis profile (tests/conftest.py): 25
examples per property in the quick loop, 200 in the full suite. Shrunk failing cases found while writing these are
kept as `@example`s."""
import io, json, os, shutil, struct, numpy as np, pandas as pd, soundfile as sf, torch, pytest
hypothesis = pytest.importorskip('hypothesis', reason="hypothesis (the `test` extra) runs the property-based tests")
from hypothesis import given, example, find, settings, strategies as st
from fastnorm.audio import load_audio, AudioLoadError
from fastnorm.cache import CacheError
import fastnorm.audio as fa

class Fixed(tuple):
    "A fixture's values, which hypothesis prints with a failing case: by name only"
    def __new__(cls, name, *vals):
        t = super().__new__(cls, vals)
        t.name = name
        return t
    def __repr__(self): return f'<{self.name}>'

OWN = (ValueError, AudioLoadError, CacheError, FileNotFoundError, FileExistsError)

def own_error(e:BaseException, *names):
    "`e` is one of fastnorm's own errors (exactly its type, not a library's subclass) and names one of `names`"
    assert type(e) in OWN, f"{type(e).__module__}.{type(e).__name__}: {e}"
    assert any(str(n) in str(e) for n in names), f"the message does not name {names}: {e}"

# ---- mutations of a file's bytes: cut it, overwrite bytes, insert junk, set a 32-bit size field

mutation = st.one_of(
    st.tuples(st.just('cut'), st.integers(0, 400)),
    st.tuples(st.just('set'), st.integers(0, 80), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just('insert'), st.integers(0, 80), st.binary(min_size=1, max_size=24)),
    st.tuples(st.just('u32'), st.integers(0, 80), st.sampled_from([0, 1, 2, 15, 16, 17, 18, 2**31, 2**32 - 1])))

def mutate(b:bytes, muts)->bytes:
    b = bytearray(b)
    for m in muts:
        if m[0] == 'cut': b = b[:m[1]]
        elif m[0] == 'set': b[m[1]:m[1] + len(m[2])] = m[2]
        elif m[0] == 'insert': b[m[1]:m[1]] = m[2]
        else: b[m[1]:m[1] + 4] = struct.pack('<I', m[2])
    return bytes(b)

# ---- audio

def pcm16_wav(ch:int, sr:int, n:int, seed:int=0, fmt_extra:bytes=b'', chunks:bytes=b'')->bytes:
    "A 16-bit PCM WAV made by hand: `fmt ` (with `fmt_extra` bytes after its 16), other `chunks`, then `data`"
    pcm = np.random.default_rng(seed).integers(-32768, 32768, (n, ch)).astype('<i2').tobytes()
    fmt = struct.pack('<HHIIHH', 1, ch, sr, sr * ch * 2, ch * 2, 16) + fmt_extra
    body = b'fmt ' + struct.pack('<I', len(fmt)) + fmt + (b'\0' if len(fmt) & 1 else b'') + chunks
    body += b'data' + struct.pack('<I', len(pcm)) + pcm
    return b'RIFF' + struct.pack('<I', 4 + len(body)) + b'WAVE' + body

def sf_bytes(fmt:str, subtype:str, ch:int, sr:int, n:int, seed:int=0)->bytes:
    "A file soundfile writes: `[n, ch]` noise in `fmt`/`subtype`"
    b = io.BytesIO()
    sf.write(b, np.random.default_rng(seed).uniform(-1, 1, (n, ch)).astype(np.float32), sr, format=fmt, subtype=subtype)
    return b.getvalue()

wav16 = st.builds(pcm16_wav, st.integers(1, 3), st.sampled_from([8000, 16000, 44100]), st.integers(0, 40),
                  st.integers(0, 3), st.sampled_from([b'', b'\0\0', b'\x16\0' + b'\0' * 22]),
                  st.sampled_from([b'', b'LIST\x04\0\0\0INFO', b'JUNK\x03\0\0\0abc\0', b'abcd\x02\0\0\0zz']))
other = st.builds(sf_bytes, st.sampled_from([('WAV', 'PCM_16'), ('WAV', 'PCM_24'), ('WAV', 'FLOAT'), ('FLAC', 'PCM_16'),
                                             ('AIFF', 'PCM_16')]).map(lambda t: t), st.just(None), st.integers(1, 2),
                  st.sampled_from([8000, 16000]), st.integers(0, 40))
other = st.tuples(st.sampled_from([('WAV', 'PCM_16'), ('WAV', 'PCM_24'), ('WAV', 'FLOAT'), ('FLAC', 'PCM_16'),
                                   ('AIFF', 'PCM_16')]), st.integers(1, 2), st.sampled_from([8000, 16000]),
                  st.integers(0, 40)).map(lambda t: (sf_bytes(t[0][0], t[0][1], *t[1:]), t[0][0].lower()))

def check_audio(path):
    "`load_audio` reads `path` as soundfile does, or refuses it with an `AudioLoadError` naming it"
    try: ref, ref_sr = sf.read(str(path), dtype='float32', always_2d=True)
    except Exception as e: ref = e
    try: x, rate = load_audio(path, mono=False)
    except Exception as e:
        own_error(e, path)
        assert isinstance(e, AudioLoadError)
        # fastnorm refuses a file soundfile reads only when it is empty or holds NaN/Inf
        assert isinstance(ref, Exception) or len(ref) == 0 or not np.isfinite(ref).all(), f"soundfile reads it: {e}"
        return
    assert not isinstance(ref, Exception), f"load_audio read a file soundfile refuses ({ref})"
    assert rate == ref_sr and x.dtype == torch.float32 and np.array_equal(x.numpy(), ref.T)

# shrunk cases: the garbled header (12-byte RIFF/WAVE, `fmt ` and junk) and a file cut inside its `fmt ` chunk
GARBLED = [b'RIFF\x24\0\0\0WAVEfmt \x10\0\0\0junk', pcm16_wav(1, 8000, 4)[:30], pcm16_wav(2, 8000, 4)[:36],
           b'RIFF\0\0\0\0WAVEfmt \xff\xff\xff\xff' + b'\0' * 16, b'RIFF\0\0\0\0WAVEdata\x04\0\0\0\0\0\0\0']

@pytest.mark.parametrize('b', GARBLED, ids=range(len(GARBLED)))
def test_garbled_wav_headers_are_named(b, tmp_path):
    p = tmp_path/'x.wav'
    p.write_bytes(b)
    with pytest.raises(AudioLoadError, match=rf"Could not decode audio file {p}"): load_audio(p)
    check_audio(p)

@given(wav16, st.lists(mutation, max_size=3))
@example(pcm16_wav(1, 8000, 4), [('cut', 30)])
@example(pcm16_wav(2, 8000, 10, fmt_extra=b'\0\0'), [('u32', 16, 17)])
@example(pcm16_wav(1, 8000, 1), [('u32', 24, 2**31)])  # a rate libsndfile refuses (it is a C int)
@example(pcm16_wav(1, 8000, 1), [('set', 46, b'RIFF'), ('set', 50, b'\0')])  # bytes after the samples: soundfile refuses
def test_pcm16_fast_path_reads_as_soundfile_or_names_the_file(tmp_path_factory, b, muts):
    p = tmp_path_factory.mktemp('wav')/'x.wav'
    p.write_bytes(mutate(b, muts))
    check_audio(p)

@given(other, st.lists(mutation, max_size=3))
def test_soundfile_path_reads_as_soundfile_or_names_the_file(tmp_path_factory, case, muts):
    (b, ext) = case
    p = tmp_path_factory.mktemp('snd')/f'x.{ext}'
    p.write_bytes(mutate(b, muts))
    check_audio(p)

def _old_read_pcm16_wav(path):
    "The fast reader as it was before this test: its header parsing let struct.error out"
    with open(path, 'rb') as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b'RIFF' or head[8:12] != b'WAVE': return None
        fmt = None
        while len(chunk := f.read(8)) == 8:
            cid, size = chunk[:4], int.from_bytes(chunk[4:], 'little')
            if cid == b'fmt ' and size >= 16:
                fmt = struct.unpack('<HHIIHH', f.read(16))
                f.seek(size - 16 + (size & 1), 1)
            elif cid == b'data':
                if fmt is None or fmt[0] != 1 or fmt[5] != 16 or fmt[1] < 1 or size % (2 * fmt[1]): return None
                data = f.read(size)
                if len(data) < size: return None
                pcm = np.frombuffer(data, '<i2').reshape(-1, fmt[1])
                return pcm.astype(np.float32) / np.float32(32768), fmt[2]
            else: f.seek(size + (size & 1), 1)
    return None

def test_the_fuzzer_finds_the_garbled_header_in_the_old_reader(tmp_path, monkeypatch):
    "The audio property, run on the old fast reader, finds the issue's struct.error; today's reader passes that case"
    p = tmp_path/'x.wav'
    def fails(case):
        "Whether the property fails on `case`"
        p.write_bytes(mutate(*case))
        try: check_audio(p)
        except AssertionError: return True
        return False
    monkeypatch.setattr(fa, '_read_pcm16_wav', _old_read_pcm16_wav)
    case = find(st.tuples(wav16, st.lists(mutation, max_size=3)), fails,
                settings=settings(max_examples=2000, database=None, derandomize=True, deadline=None))
    p.write_bytes(mutate(*case))
    with pytest.raises(AssertionError, match=r'struct\.error: unpack requires a buffer of 16 bytes'): check_audio(p)
    with pytest.raises(struct.error): _old_read_pcm16_wav(p)
    monkeypatch.undo()
    check_audio(p)  # no struct.error now
    assert len(mutate(*case)) < 60, mutate(*case)  # shrunk to a short header

# ---- esc50.csv

from fastnorm.data import read_esc50_csv, fsdd_items, folder_items, FSDD_RE, ESC50_COLUMNS
from fastnorm.audio import AUDIO_EXTS

CLIPS = ['1-1-A-0.wav', '1-2-A-1.wav', '2-3-A-0.wav', '3-4-B-1.wav']

@pytest.fixture(scope='module')
def esc_dir(tmp_path_factory):
    "A folder in ESC-50's layout with four short clips; each example writes its own meta/esc50.csv"
    d = tmp_path_factory.mktemp('escfuzz')
    (d/'audio').mkdir(); (d/'meta').mkdir()
    for f in CLIPS: sf.write(d/'audio'/f, np.full(80, .1, np.float32), 8000)
    return d

cell = lambda *vs: st.sampled_from(vs)
csv_row = st.tuples(cell(*CLIPS, '', 'gone.wav', ' 1-1-A-0.wav', '5'), cell('1', '2', '3', 'fold1', '', ' ', '2.0', '1.5',
                    '-1', 'nan', '1e3'), cell('0', '1', '', 'x', '-1', '3.0', '99999999999999999999'),
                    cell('dog', 'cat', '', ' ', 'nan', 'NA', 'None', '"a,b"', '0'), cell('True', 'False', '', 'maybe', '1'),
                    cell('100', 'x'), cell('A', 'B'))
csv_text = st.tuples(st.lists(csv_row, min_size=0, max_size=6),
                     st.sets(st.sampled_from(ESC50_COLUMNS), max_size=1)).map(
    lambda t: ','.join(c for c in ESC50_COLUMNS if c not in t[1]) + '\n' + ''.join(
        ','.join(v for c, v in zip(ESC50_COLUMNS, r) if c not in t[1]) + '\n' for r in t[0]))

def _ints(v): return pd.to_numeric(v, errors='coerce')

@given(csv_text, st.lists(mutation, max_size=2), st.sampled_from([None, 'esc10']))
@example('filename,fold,target,category,esc10,src_file,take\n1-1-A-0.wav,fold1,0,dog,True,1,A\n', [], None)
@example('filename,fold,target,category,esc10,src_file,take\n5,1,0,dog,True,1,A\n', [], None)  # a number as filename
@example('filename,fold,target,category,esc10,src_file,take\n1-1-A-0.wav,1,0,dog,True,100,A,B\n', [], None)  # pandas
# made the first cells an index and shifted every column
def test_esc50_csv_reads_as_pandas_or_names_the_csv(esc_dir, text, muts, subset):
    csv = esc_dir/'meta'/'esc50.csv'
    csv.write_bytes(mutate(text.encode(), muts))
    try: ref = pd.read_csv(csv, dtype={'filename': str})
    except Exception as e: ref = e
    try: df = read_esc50_csv(esc_dir, subset)
    except Exception as e:
        own_error(e, csv)
        return
    assert not isinstance(ref, Exception), f"read_esc50_csv read a csv pandas refuses ({ref})"
    if subset: ref = ref[ref['esc10'].astype(str).str.strip().str.lower().isin(['true', '1']).to_numpy()]
    ref = ref.reset_index(drop=True)
    # as pandas reads it, with integer folds and targets, and nothing a label or a split cannot use
    assert df['filename'].tolist() == ref['filename'].tolist() and df['category'].tolist() == ref['category'].tolist()
    assert (df['fold'].to_numpy() == _ints(ref['fold']).to_numpy()).all() and df['fold'].dtype == np.int64
    assert (df['target'].to_numpy() == _ints(ref['target']).to_numpy()).all() and (df['target'] >= 0).all()
    assert df['category'].notna().all() and (df['category'].astype(str).str.strip() != '').all()
    assert df['filename'].is_unique and all(os.path.isfile(p) for p in df['path'])

# ---- FSDD and class-folder listings

fsdd_name = st.one_of(st.builds('{}_{}_{}.wav'.format, st.integers(0, 9), st.sampled_from(['ann', 'bob', 'x1', '']),
                                st.sampled_from(['0', '12', 'a', '-1'])),
                      st.sampled_from(['1_ann_0.WAV', 'notes.txt', '1_ann_0.wav.bak', '11_ann_0.wav', 'x.wav']))

@given(st.lists(st.tuples(fsdd_name, st.booleans()), max_size=6, unique_by=lambda t: t[0]))
def test_fsdd_listing_is_the_recordings_named_so(tmp_path_factory, entries):
    d = tmp_path_factory.mktemp('fsdd')
    for name, is_dir in entries:
        (d/name).mkdir() if is_dir else (d/name).write_bytes(b'')
    want = sorted((str(d/n), *FSDD_RE.match(n).groups()) for n, is_dir in entries if not is_dir and FSDD_RE.match(n))
    try: df = fsdd_items(d)
    except Exception as e:
        own_error(e, d)
        assert not want
        return
    assert [tuple(r) for r in df[['path', 'label', 'speaker']].itertuples(index=False)] == [w[:3] for w in want]
    assert df['take'].tolist() == [int(w[3]) for w in want]

tree_entry = st.tuples(st.sampled_from(['', 'train', 'valid', 'other']), st.sampled_from(['', 'cat', 'dog', 'dog/sub']),
                       st.sampled_from(['a.wav', 'b.WAV', 'c.flac', 'd.txt', 'e.ogg']), st.booleans())

@given(st.lists(tree_entry, max_size=6))
@example([('', 'cat', 'a.wav', False), ('', '', 'b.WAV', False)])  # a file beside the class folders
@example([('', 'cat', 'a.wav', True)])  # a folder named like audio
def test_class_folder_listing_labels_every_file_by_its_folder(tmp_path_factory, entries):
    d = tmp_path_factory.mktemp('cls')
    for split, label, name, is_dir in entries:
        f = d/split/label/name
        if f.exists(): continue
        f.mkdir(parents=True) if is_dir else (f.parent.mkdir(parents=True, exist_ok=True), f.write_bytes(b''))
    files = sorted(f for f in d.rglob('*') if f.is_file() and f.suffix.lower() in AUDIO_EXTS)
    split = (d/'train').is_dir() and (d/'valid').is_dir()
    parts = [f.relative_to(d).parts for f in files]
    fine = all(len(p) == (3 if split else 2) and (not split or p[0] in ('train', 'valid')) for p in parts)
    try: df = folder_items(d)
    except Exception as e:
        own_error(e, d)
        assert not files or not fine
        return
    assert fine and df['path'].tolist() == [str(f) for f in files]
    assert df['label'].tolist() == [p[-2] for p in parts] and df['is_valid'].tolist() == [split and p[0] == 'valid'
                                                                                       for p in parts]

# ---- --labels .npy

from hypothesis.extra import numpy as hnp
from fastnorm.avmnist.items import dataset_items, follow_labels

@pytest.fixture(scope='module')
def fsdd_dir(tmp_path_factory):
    "FSDD's layout: digits 0-2, one speaker, takes 0-6, 10 ms each"
    d = tmp_path_factory.mktemp('fsddfuzz')
    for digit in range(3):
        for take in range(7): sf.write(d/f'{digit}_ann_{take}.wav', np.full(80, .1, np.float32), 8000)
    return d

labels_array = st.builds(lambda a, dt: a.astype(dt),  # -1 wraps round in the unsigned types
                         hnp.arrays(np.int64, hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=5),
                                    elements=st.integers(-1, 4)),
                         st.sampled_from(['i1', 'u1', '<i4', '>i4', 'u8', 'i8', 'f4', '?']))
labels_bytes = st.one_of(
    st.tuples(labels_array, st.lists(mutation, max_size=2)).map(lambda t: mutate(_npy(t[0]), t[1])),
    st.just(b''), st.sampled_from([b'\x93NUMPY', b'PK\x03\x04junk']))

def _npy(a)->bytes:
    b = io.BytesIO(); np.save(b, a); return b.getvalue()

@given(labels_bytes)
@example(_npy(np.array([object()], dtype=object)))  # pickled objects
@example(_npy(np.array([0, 1, 2], dtype=np.int64))[:-3])  # cut short
@example(_npy(np.array([0], dtype='>i4')))  # big-endian: pandas' groupby refused it deep inside
def test_labels_npy_reads_as_numpy_or_names_the_file(fsdd_dir, tmp_path_factory, b):
    f = tmp_path_factory.mktemp('labels')/'labels.npy'
    f.write_bytes(b)
    try: ref = np.load(f, allow_pickle=False)
    except Exception as e: ref = e
    try: items = follow_labels(f, *dataset_items(fsdd_dir, 'all', 5, 0)[:2])
    except Exception as e:
        own_error(e, f)
        return
    assert not isinstance(ref, Exception), f"read labels numpy refuses ({ref})"
    assert items['label'].tolist() == ref.tolist() and ref.ndim == 1 and np.issubdtype(ref.dtype, np.integer)
    assert all(os.path.basename(p).startswith(f'{l}_') for p, l in zip(items['path'], items['label']))

# ---- noise folders

from fastnorm.noise import NoiseClips

def _noise_file(kind:str, seed:int)->bytes:
    rng = np.random.default_rng(seed)
    x = rng.uniform(.1, 1, 40).astype(np.float32) * rng.choice([-1, 1], 40)
    if kind == 'ok': return sf_bytes_of(x, 'PCM_16')
    if kind == 'silent': return sf_bytes_of(np.zeros(40, np.float32), 'PCM_16')
    if kind == 'nan': return sf_bytes_of(np.where(np.arange(40) == 3, np.nan, x).astype(np.float32), 'FLOAT')
    if kind == 'cut': return sf_bytes_of(x, 'PCM_16')[:30]
    if kind == 'empty': return b''
    return bytes(rng.integers(0, 256, 60, dtype=np.uint8))

def sf_bytes_of(x, subtype):
    b = io.BytesIO(); sf.write(b, x, 8000, format='WAV', subtype=subtype); return b.getvalue()

@given(st.lists(st.sampled_from(['ok', 'silent', 'nan', 'cut', 'empty', 'junk']), min_size=1, max_size=5))
def test_noise_folder_keeps_the_readable_clips_or_names_the_folder(tmp_path_factory, kinds):
    d = tmp_path_factory.mktemp('noise')
    for i, k in enumerate(kinds): (d/f'{i}-{k}.wav').write_bytes(_noise_file(k, i))
    def usable(f):
        try: x, _ = sf.read(str(f), dtype='float32', always_2d=True)
        except Exception: return False
        return len(x) > 0 and np.isfinite(x).all() and np.abs(x).max() > 0
    want = sorted(str(f) for f in d.iterdir() if usable(f))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try: nc = NoiseClips(d, 8000)
        except Exception as e:
            own_error(e, d)
            assert not want
            return
    assert nc.files == want
    for f, x, n in zip(nc.files, nc.clips, nc.lengths):  # the clips as soundfile reads them (none starts silent)
        ref = sf.read(f, dtype='float32', always_2d=True)[0].mean(1)
        assert int(n) == len(ref) and np.array_equal(x[:int(n)].numpy(), ref)

# ---- StatsRecorder.load

from fastnorm.stats import StatsRecorder

def _recorder():
    r = StatsRecorder(red_dims=(0, 3))
    r.update(torch.arange(2 * 1 * 3 * 4, dtype=torch.float32).reshape(2, 1, 3, 4))
    return r

def _same_state(a:dict, b:dict)->bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k]
                                        for k in a)

edit_value = st.one_of(st.none(), st.integers(-2, 5), st.booleans(), st.text(max_size=3), st.just([0, 3]),
                       st.just([1, 1, 3, 1]), st.just({'sr': -1}), st.just(torch.zeros(3)),
                       st.just(torch.full((1, 1, 3, 1), float('nan'), dtype=torch.float64)),
                       st.just(torch.zeros((1, 1, 3, 1), dtype=torch.int64)))
state_edit = st.tuples(st.sampled_from(['format', 'red_dims', 'ndim', 'kept_shape', 'unbiased', 'time_dim', 'n_batches',
                                        'cfg', 'count', 'mean', 'm2']), st.one_of(st.just('drop'), edit_value))

@given(st.one_of(st.tuples(st.just('bytes'), st.lists(mutation, max_size=3)),
                 st.tuples(st.just('edit'), st.lists(state_edit, min_size=1, max_size=2))))
@example(('edit', [('cfg', 'drop')]))  # was a KeyError
@example(('edit', [('mean', torch.zeros(3))]))
def test_stats_load_reads_what_save_wrote_or_names_the_file(tmp_path_factory, case):
    f = tmp_path_factory.mktemp('stats')/'s.pt'
    good = _recorder()
    d = good.state_dict()
    if case[0] == 'bytes':
        good.save(f)
        f.write_bytes(mutate(f.read_bytes(), case[1]))
    else:
        for k, v in case[1]:
            if v == 'drop': d.pop(k, None)
            else: d[k] = v
        torch.save(d, f)
    try: r = StatsRecorder.load(f)
    except Exception as e:
        own_error(e, f)
        return
    got = r.state_dict()
    if case[0] == 'bytes': assert _same_state(got, good.state_dict())
    else: assert _same_state(got, {**d, 'version': got['version']})
    assert torch.isfinite(r.mean).all() and torch.isfinite(r.std).all() and r.mean.shape == tuple(got['kept_shape'])

# ---- a feature cache folder

from fastnorm.cache import SpecCache
from fastnorm.spec import spec_config

@pytest.fixture(scope='module')
def cache_dir(esc_dir, tmp_path_factory):
    "A feature cache of four clips, and each clip's spectrogram"
    files = [str(esc_dir/'audio'/f) for f in CLIPS]
    c = SpecCache.build(files, spec_config('quick', sr=8000), 0.01, dest=tmp_path_factory.mktemp('cache')/'c',
                        progress=False)
    return Fixed('cache_dir', c.path, {f: c[f] for f in files}, c.item_stats)

json_edit = st.tuples(st.sampled_from(['key', 'cfg', 'duration', 'wave_norm', 'shape', 'fmt', 'files', 'check']),
                      st.one_of(st.just('drop'), st.none(), st.integers(-1, 3), st.floats(allow_nan=True),
                                st.just([4, 1, 64, 2]), st.just({'sr': 8000}), st.text(max_size=3)))
csv_edit = st.sampled_from(['swap rows', 'swap files', 'drop row', 'row 9', 'empty file', 'no header', 'extra column'])

def _edit_index(text:str, how:str)->str:
    lines = text.splitlines()
    head, rows = lines[0], lines[1:]
    if how == 'swap rows': rows = [rows[1].rsplit(',', 1)[0] + ',0', rows[0].rsplit(',', 1)[0] + ',1'] + rows[2:]
    elif how == 'swap files': rows = [rows[1], rows[0]] + rows[2:]
    elif how == 'drop row': rows = rows[:-1]
    elif how == 'row 9': rows = rows[:-1] + [rows[-1].rsplit(',', 1)[0] + ',9']
    elif how == 'empty file': rows = [',0'] + rows[1:]
    elif how == 'no header': head = rows.pop(0)
    else: head, rows = head + ',x', [r + ',1' for r in rows]
    return '\n'.join([head] + rows) + '\n'

@given(st.sampled_from(['meta.json', 'index.csv', 'data.npy', 'stats.npz']),
       st.one_of(st.tuples(st.just('bytes'), st.lists(mutation, min_size=1, max_size=3)),
                 st.tuples(st.just('json'), st.lists(json_edit, min_size=1, max_size=2)),
                 st.tuples(st.just('csv'), csv_edit)))
@example('index.csv', ('csv', 'swap files'))  # each file would get another's spectrogram
@example('meta.json', ('json', [('shape', [4, 1, 64, 2])]))
@example('data.npy', ('bytes', [('cut', 200)]))
def test_cache_folder_reads_as_written_or_names_the_file(cache_dir, tmp_path_factory, target, case):
    src, specs, stats = cache_dir
    d = tmp_path_factory.mktemp('cachecopy')/'c'
    shutil.copytree(src, d)
    f = d/target
    if case[0] == 'bytes': f.write_bytes(mutate(f.read_bytes(), case[1]))
    elif case[0] == 'json' and target == 'meta.json':
        meta = json.loads(f.read_text())
        for k, v in case[1]:
            if v == 'drop': meta.pop(k, None)
            else: meta[k] = v
        f.write_text(json.dumps(meta))
    elif case[0] == 'csv' and target == 'index.csv': f.write_text(_edit_index(f.read_text(), case[1]))
    try:
        c = SpecCache(d)
        got = {k: c[k] for k in specs}
        st_ = c.item_stats
    except Exception as e:
        own_error(e, d)
        return
    for k, v in specs.items(): assert torch.equal(got[k], v) and got[k].cfg == v.cfg
    assert all(torch.equal(st_[k], stats[k]) for k in stats)

# ---- results.csv and config.json under --resume

from fastnorm.study.results import Ledger
from fastnorm.study.ranks import Ranks
from fastnorm.study.run import check_same_settings
from fastnorm.study.config import CompareConfig

res_row = st.tuples(cell('none', 'global', '', 'nan'), cell('0', '1', '', 'x', '1.5', '-1'), cell('1', '2', '', 'f1'),
                    cell('0', '7'), cell('0.5', '1', '', '1.5', 'x', '-0.1'))
res_text = st.tuples(st.lists(res_row, max_size=4), st.sets(st.sampled_from(['norm', 'run', 'fold', 'final_acc']),
                                                           max_size=1)).map(
    lambda t: ','.join(c for c in ['norm', 'run', 'fold', 'seed', 'final_acc'] if c not in t[1]) + '\n' + ''.join(
        ','.join(v for c, v in zip(['norm', 'run', 'fold', 'seed', 'final_acc'], r) if c not in t[1]) + '\n'
        for r in t[0]))

def pandas_reads(f):
    "What pandas reads of the csv `f`, or the exception it raises"
    try: return pd.read_csv(f)
    except Exception as e: return e

def resumed(out, f):
    "The `Ledger` that `--resume` reads from `out`, or None when it refused with fastnorm's own error naming `f`"
    try: return Ledger(out, ('none', 'global'), ['final_acc'], Ranks(), resume=True)
    except Exception as e:
        own_error(e, f)
        return None


@given(res_text, st.lists(mutation, max_size=2))
@example('norm,run,fold,seed,final_acc\nnone,,1,0,0.5\n', [])  # an empty run: a job no one can name
@example('run,fold,seed\n0,1,0\n', [])  # no norm column: was a KeyError
def test_results_csv_under_resume_reads_as_pandas_or_names_the_file(tmp_path_factory, text, muts):
    out = tmp_path_factory.mktemp('cmp')
    f = out/'results.csv'
    f.write_bytes(mutate(text.encode(), muts))
    ref = pandas_reads(f)
    led = resumed(out, f)
    if led is None: return
    if isinstance(ref, Exception):  # only an empty file reads as no rows
        assert f.stat().st_size == 0 and not led.rows
        return
    if 'fold' not in ref: ref['fold'] = 1
    keys = set(zip(ref['norm'], _ints(ref['run']), _ints(ref['fold']))) if len(ref) else set()
    assert set(led.rows) == keys
    for (n, r, fo), row in led.rows.items():
        assert isinstance(n, str) and n.strip() and int(r) == r >= 0 and int(fo) == fo >= 0 and 0 <= row['final_acc'] <= 1

json_value = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=4),
                          lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                          max_leaves=6)

@given(st.one_of(st.tuples(st.just('bytes'), st.lists(mutation, min_size=1, max_size=3)),
                 st.tuples(st.just('json'), json_value)))
@example(('json', []))  # a list, not the settings: was an AttributeError
def test_config_json_under_resume_matches_or_names_the_file(tmp_path_factory, case):
    out = tmp_path_factory.mktemp('cfg')
    cfg = CompareConfig(data='synth', epochs=1, runs=1)
    good = json.dumps({**cfg.key(), 'fastnorm': 'x'}, indent=1).encode()
    (out/'config.json').write_bytes(mutate(good, case[1]) if case[0] == 'bytes' else json.dumps(case[1]).encode())
    try: check_same_settings(cfg, out)
    except Exception as e:
        own_error(e, out/'config.json', out)
        return
    old = json.loads((out/'config.json').read_text())
    assert all(old.get(k) == v for k, v in json.loads(json.dumps(cfg.key())).items())

# ---- an export's partial folder and manifests under --resume

import warnings
from fastnorm.avmnist.export import export_dataset

EXPORT = dict(split='all', scheme='clean', bs=8, size='8x8', progress=False, device='cpu')

@pytest.fixture(scope='module')
def export_parts(fsdd_dir, tmp_path_factory):
    "The arrays of a whole export of 21 rows (3 batches), and an export interrupted after its first batch"
    d = tmp_path_factory.mktemp('exp')
    full = export_dataset(d/'full', data=fsdd_dir, **EXPORT)
    def stop(first, end): raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt): export_dataset(d/'cut', data=fsdd_dir, on_batch=stop, **EXPORT)
    return Fixed('export_parts', np.load(full/'data.npy'), np.load(full/'labels.npy'), d/'cut.partial')

@given(st.sampled_from(['export.json', 'manifest', 'data.npy', 'labels.npy']),
       st.one_of(st.tuples(st.just('bytes'), st.lists(mutation, min_size=1, max_size=3)),
                 st.tuples(st.just('json'), st.sampled_from(['rows', 'settings', 'list', 'seed']))))
@example('manifest', ('json', 'rows'))  # a manifest of other rows: its batch is written again
@example('export.json', ('json', 'list'))
def test_export_resume_completes_the_same_bytes_or_names_the_file(fsdd_dir, export_parts, tmp_path_factory, target,
                                                                  case):
    data, labels, src = export_parts
    d = tmp_path_factory.mktemp('resume')
    part = shutil.copytree(src, d/'x.partial')
    f = next((part/'manifest').glob('*.json')) if target == 'manifest' else part/target
    if case[0] == 'bytes': f.write_bytes(mutate(f.read_bytes(), case[1]))
    elif f.suffix == '.json':
        j = json.loads(f.read_text())
        if case[1] == 'list': j = [j]
        elif case[1] == 'rows' and 'rows' in j: j['rows'] = [0, 3]
        elif case[1] == 'settings': j['settings'] = {**j['settings'], 'seed': 1}
        else: j.pop('settings', None)
        f.write_text(json.dumps(j))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # a redone batch warns
        try: out = export_dataset(d/'x', data=fsdd_dir, resume=True, **EXPORT)
        except Exception as e:
            own_error(e, part)
            return
    # the arrays of the uninterrupted export (a header with other spacing, numpy's reading the same, may stay)
    assert np.array_equal(np.load(out/'data.npy'), data) and np.load(out/'data.npy').dtype == data.dtype
    assert np.array_equal(np.load(out/'labels.npy'), labels) and np.load(out/'labels.npy').dtype == labels.dtype

curve_row = st.tuples(cell('none', 'global', ''), cell('0', '1', 'x'), cell('1', '', '2'), cell('1', '2', '0.5', ''),
                      cell('0.5', '2', '', 'x'))
curve_text = st.lists(curve_row, max_size=4).map(lambda rows: 'norm,run,fold,epoch,accuracy\n' + ''.join(
    ','.join(r) + '\n' for r in rows))

@given(curve_text, st.lists(mutation, max_size=2))
def test_curves_csv_under_resume_reads_as_pandas_or_names_the_file(tmp_path_factory, text, muts):
    "curves.csv beside a good results.csv: its rows of the jobs in results.csv are kept as pandas reads them"
    out = tmp_path_factory.mktemp('curves')
    (out/'results.csv').write_text('norm,run,fold,seed,final_acc\nnone,0,1,0,0.5\nglobal,1,1,1,0.25\n')
    f = out/'curves.csv'
    f.write_bytes(mutate(text.encode(), muts))
    ref = pandas_reads(f)
    led = resumed(out, f)
    if led is None: return
    got = pd.concat(led.curves) if led.curves else pd.DataFrame()
    if isinstance(ref, Exception) or not len(ref):
        assert not len(got)
        return
    ref = pd.DataFrame({c: ref[c] if c == 'norm' else _ints(ref[c]) for c in ('norm', 'run', 'fold', 'epoch')})
    keep = [(n, int(r), int(fo)) in led.rows for n, r, fo in zip(ref['norm'], ref['run'], ref['fold'])]
    # the curves of jobs without a results row are dropped (cut between the two writes), a repeated epoch read once
    ref = ref[keep].drop_duplicates(keep='first')
    assert len(got) == len(ref)
    if len(got):
        assert got['epoch'].dtype == np.int64 and got['accuracy'].between(0, 1).all()
        assert (got[['run', 'fold', 'epoch']].to_numpy() == ref[['run', 'fold', 'epoch']].to_numpy()).all()
