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
import fastnorm.audio as fa

OWN = (ValueError, AudioLoadError, FileNotFoundError, FileExistsError)

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
