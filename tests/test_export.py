import json, subprocess, sys
import numpy as np, pandas as pd, pytest, soundfile as sf, torch
from fastnorm.avmnist import export_dataset
from fastnorm.avmnist.export import parse_size
from fastnorm.avmnist.items import dataset_items, follow_labels
from fastnorm.data import FSDD_TEST_TAKES
from conftest import needs, FSDD

SR = 8000

@pytest.fixture(scope='module')
def tiny_fsdd(tmp_path_factory):
    "FSDD's layout: digits 0-3, speakers alice and bob, takes 0-6, 0.15-0.5 s tones at 8 kHz"
    d = tmp_path_factory.mktemp('fsdd')/'recordings'
    d.mkdir()
    rng = np.random.default_rng(0)
    for digit in range(4):
        for spk in ('alice', 'bob'):
            for take in range(7):
                n = int(rng.integers(1200, 4000))
                t = np.arange(n) / SR
                x = 0.3 * np.sin(2 * np.pi * (300 + 400 * digit) * t) * np.hanning(n) + 0.01 * rng.standard_normal(n)
                sf.write(d/f'{digit}_{spk}_{take}.wav', x.astype(np.float32), SR, subtype='PCM_16')
    return d

def run(tmp_path, name='out', **kw):
    kw.setdefault('progress', False)
    kw.setdefault('device', 'cpu')
    return export_dataset(tmp_path/name, **kw)

def test_dataset_items_layouts(tiny_fsdd, tiny_esc50, tmp_path):
    items, classes, layout = dataset_items(tiny_fsdd, 'test')
    assert layout == 'fsdd' and classes == [str(i) for i in range(10)] and len(items) == 4 * 2 * 5
    takes = {int(p.split('/')[-1].split('_')[2][:-4]) for p in items['path']}
    assert takes == set(FSDD_TEST_TAKES) == {0, 1, 2, 3, 4}  # AVMNIST's test split
    assert (items['label'] == [int(p.split('/')[-1][0]) for p in items['path']]).all()
    assert len(dataset_items(tiny_fsdd.parent, 'train')[0]) == 4 * 2 * 2  # the folder holding recordings/ works too
    items, classes, layout = dataset_items(tiny_esc50, 'train', test_fold=5)
    assert layout == 'esc50' and len(items) == 32 and len(classes) == 4
    with pytest.raises(ValueError, match='test_fold 7'): dataset_items(tiny_esc50, 'test', test_fold=7)
    with pytest.raises(ValueError, match='`split` must be one of'): dataset_items(tiny_esc50, 'valid')
    with pytest.raises(FileNotFoundError, match='dataset folder .*: no such folder'): dataset_items(tmp_path/'none')
    (tmp_path/'notes').mkdir()
    (tmp_path/'notes'/'a.txt').write_text('no audio')
    with pytest.raises(ValueError, match='not in a layout fastnorm reads here'): dataset_items(tmp_path/'notes')

def test_follow_labels_cycles():
    items = pd.DataFrame(dict(path=['a0', 'a1', 'b0', 'c0', 'c1', 'c2'], label=[0, 0, 1, 2, 2, 2]))
    got = follow_labels(np.array([2, 0, 2, 0, 0, 1, 2, 2]), items)
    assert got['path'].tolist() == ['c0', 'a0', 'c1', 'a1', 'a0', 'b0', 'c2', 'c0']
    assert got['label'].tolist() == [2, 0, 2, 0, 0, 1, 2, 2]
    with pytest.raises(ValueError, match=r"asks for label 7 \('7'\) \(first at row 2\)"):
        follow_labels(np.array([0, 1, 7]), items, [str(i) for i in range(10)])
    with pytest.raises(ValueError, match='integer labels'): follow_labels(np.array([0.5]), items)

def test_parse_size():
    assert parse_size('112x112') == (112, 112) and parse_size('64X200') == (64, 200) and parse_size(32) == (32, 32)
    for bad in ('112', '0x5', 'axb', 3.5):
        with pytest.raises(ValueError, match='HEIGHTxWIDTH'): parse_size(bad)

def test_export_round_trip(tiny_fsdd, tiny_esc50, tmp_path):
    out = run(tmp_path, data=tiny_fsdd, noise=tiny_esc50, split='test', scheme='burst_noise', bs=16)
    data, labels = np.load(out/'data.npy', mmap_mode='r'), np.load(out/'labels.npy')
    head = json.loads((out/'export.json').read_text())
    assert data.shape == (40, 112, 112) and data.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.shape == (40,)
    assert head['shape'] == [40, 112, 112] and head['settings']['scheme'] == 'burst_noise'
    assert not (tmp_path/'out.partial').exists()
    mans = sorted((out/'manifest').glob('*.json'))
    assert [m.name for m in mans] == [f'rows-{a:08d}-{b:08d}.json' for a, b in ((0, 15), (16, 31), (32, 39))]
    files, noise = [], []
    for m in mans:
        j = json.loads(m.read_text())
        files += j['files']
        noise += j['noise']
        assert j['scheme'] == 'burst_noise' and j['seed'] == 0 and j['settings'] == head['settings']
    assert [int(f.split('/')[-1][0]) for f in files] == labels.tolist()  # labels are the files' digits
    test_noise = set(pd.read_csv(tiny_esc50/'meta'/'esc50.csv').query('fold == 5').filename)
    assert {n.split('/')[-1] for n in noise} == test_noise  # test items get test noise: ESC-50's fold 5, each clip used
    assert (np.asarray(data).reshape(40, -1) == 255).mean(1).min() > 0.1  # the time masks: white columns
    # the same seed gives the same bytes, another seed other bytes; the train split gets the other folds' noise
    again = run(tmp_path, 'again', data=tiny_fsdd, noise=tiny_esc50, split='test', scheme='burst_noise', bs=16)
    assert (out/'data.npy').read_bytes() == (again/'data.npy').read_bytes()
    other = run(tmp_path, 'other', data=tiny_fsdd, noise=tiny_esc50, split='test', scheme='burst_noise', bs=16, seed=1)
    assert (out/'data.npy').read_bytes() != (other/'data.npy').read_bytes()
    train = run(tmp_path, 'train', data=tiny_fsdd, noise=tiny_esc50, split='train', scheme='burst_noise')
    tn = {n.split('/')[-1] for n in json.loads(next((train/'manifest').glob('*.json')).read_text())['noise']}
    assert tn and not tn & test_noise

def test_two_batches_at_a_time_give_the_same_bytes(tiny_fsdd, tiny_esc50, tmp_path):
    "With 2 torch threads the CPU computes two batches at once, each with its own Scheme: the bytes are the same"
    kw = dict(data=tiny_fsdd, noise=tiny_esc50, split='all', scheme='burst_noise', bs=8)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run(tmp_path, 'one', **kw)
        torch.set_num_threads(2)
        two = run(tmp_path, 'two', **kw)
        assert torch.get_num_threads() == 2  # restored after the export
    finally: torch.set_num_threads(threads)
    assert len(list((two/'manifest').glob('*.json'))) > 2
    assert (one/'data.npy').read_bytes() == (two/'data.npy').read_bytes()
    assert [json.loads(m.read_text())['noise'] for m in sorted((one/'manifest').glob('*.json'))] == \
        [json.loads(m.read_text())['noise'] for m in sorted((two/'manifest').glob('*.json'))]

def test_resume_gives_the_same_bytes(tiny_fsdd, tmp_path):
    kw = dict(data=tiny_fsdd, split='all', scheme='extreme_noise', bs=8)
    written = []
    full = run(tmp_path, 'full', on_batch=lambda first, end: written.append((first, end)), **kw)
    assert written == [(s, s + 8) for s in range(0, 56, 8)]  # 56 rows, in order
    def stop(first, end):
        # after the 3rd batch is written; with two batches computed at a time the 4th may be computed too, unwritten
        if end == 24: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt): run(tmp_path, 'cut', on_batch=stop, **kw)
    part = tmp_path/'cut.partial'
    assert not (tmp_path/'cut').exists() and part.is_dir()
    assert sorted(m.name for m in (part/'manifest').glob('*.json')) == [
        f'rows-{s:08d}-{s + 7:08d}.json' for s in (0, 8, 16)]
    with pytest.raises(FileExistsError, match='continue it with --resume'): run(tmp_path, 'cut', **kw)
    with pytest.raises(ValueError, match='other settings.*scheme'):
        run(tmp_path, 'cut', resume=True, **{**kw, 'scheme': 'burst_noise'})
    written.clear()
    out = run(tmp_path, 'cut', resume=True, on_batch=lambda first, end: written.append((first, end)), **kw)
    assert written == [(s, s + 8) for s in range(24, 56, 8)]  # only the missing batches
    assert (out/'data.npy').read_bytes() == (full/'data.npy').read_bytes() and not part.exists()
    assert (out/'labels.npy').read_bytes() == (full/'labels.npy').read_bytes()
    assert run(tmp_path, 'cut', resume=True, **kw) == out  # complete: nothing to do
    with pytest.raises(FileExistsError, match='exists: use --resume'): run(tmp_path, 'cut', **kw)

def test_resume_reads_the_layout_key_of_earlier_exports(tiny_fsdd, tmp_path):
    "An export.json whose settings name the layout 'kind' (an earlier fastnorm) resumes as one naming it 'layout'"
    kw = dict(data=tiny_fsdd, split='test', scheme='clean', bs=16, size='16x16')
    def stop(first, end): raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt): run(tmp_path, 'old', on_batch=stop, **kw)
    head_file = tmp_path/'old.partial'/'export.json'
    head = json.loads(head_file.read_text())
    assert head['settings']['layout'] == 'fsdd' and 'kind' not in head['settings']
    head['settings'] = {('kind' if k == 'layout' else k): v for k, v in head['settings'].items()}
    head_file.write_text(json.dumps(head))
    out = run(tmp_path, 'old', resume=True, **kw)
    assert (out/'data.npy').read_bytes() == (run(tmp_path, 'new', **kw)/'data.npy').read_bytes()

def test_follow_a_labels_file(tiny_fsdd, tmp_path):
    np.save(tmp_path/'train_labels.npy', np.array([3, 0, 3, 3, 1, 3, 3], dtype=np.uint8))
    out = run(tmp_path, data=tiny_fsdd, labels=tmp_path/'train_labels.npy', split='train', scheme='clean')
    man = json.loads(next((out/'manifest').glob('*.json')).read_text())
    assert np.load(out/'labels.npy').tolist() == [3, 0, 3, 3, 1, 3, 3]
    threes = sorted(str(p) for p in tiny_fsdd.glob('3_*.wav') if int(p.stem.split('_')[2]) >= 5)  # 3's 4 train clips
    assert [f for f in man['files'] if '/3_' in f] == threes + threes[:1]  # cycled through, in order
    assert man['noise'] is None

def test_errors_before_any_work(tiny_fsdd, tmp_path):
    np.save(tmp_path/'labels.npy', np.array([0, 1, 7]))
    junk = tmp_path/'junk'
    junk.mkdir()
    (junk/'a.wav').write_bytes(b'RIFF nonsense')
    cases = [(dict(labels=tmp_path/'labels.npy'), ValueError, r'asks for label 7 .*no items of it'),
             (dict(noise=junk, scheme='burst_noise'), ValueError, 'no readable, non-silent audio'),
             (dict(scheme='loud'), ValueError, r"`scheme` must be one of \(.*'burst_noise'.*\) \('loud' given\)"),
             (dict(format='png'), ValueError, '`format`'),
             (dict(color='blue'), ValueError, '`color`'),
             (dict(bs=0), ValueError, '`bs` must be an integer >= 1'),
             (dict(sr=float('nan')), ValueError, '(?i)nan'),
             (dict(sr=0), ValueError, '`sr` must be an integer >= 1'),
             (dict(split='valid'), ValueError, '`split`'),
             (dict(size='big'), ValueError, 'HEIGHTxWIDTH'),
             (dict(labels=tmp_path/'none.npy'), FileNotFoundError, 'Labels file not found')]
    for kw, err, match in cases:
        with pytest.raises(err, match=match): run(tmp_path, 'never', data=tiny_fsdd, **kw)
        assert not (tmp_path/'never').exists() and not (tmp_path/'never.partial').exists()
    (tmp_path/'taken').mkdir()
    with pytest.raises(FileExistsError, match='exists: use --resume'): run(tmp_path, 'taken', data=tiny_fsdd)

def test_db_format(tiny_fsdd, tmp_path):
    out = run(tmp_path, data=tiny_fsdd, split='train', format='db', size='40x50', scheme='multi_band')
    d = np.load(out/'data.npy')
    assert d.shape == (16, 40, 50) and d.dtype == np.float32 and np.isfinite(d).all()
    j = json.loads((out/'export.json').read_text())
    assert j['orientation'] == 'row 0 = lowest frequency' and j['pixels'] is None
    # rows above 3.5 kHz were removed by the band keep: each at its item's floor
    assert np.allclose(d[:, -3:, :], d.min((1, 2), keepdims=True))
    out = run(tmp_path, 'mel', data=tiny_fsdd, split='train', format='db', mels=True, size='32x20', scheme='clean')
    mel = np.load(out/'data.npy')
    assert mel.shape == (16, 32, 20) and np.isfinite(mel).all()
    digit = np.array([int(p.name[0]) for p in sorted(tiny_fsdd.glob('*.wav')) if int(p.stem.split('_')[2]) >= 5])
    peak = mel.mean(-1).argmax(-1)
    assert all(peak[digit == a].mean() < peak[digit == b].mean() for a, b in ((0, 1), (1, 2), (2, 3)))  # higher tones
    with pytest.raises(ValueError, match='`mels`'): run(tmp_path, 'x', data=tiny_fsdd, mels=True)

def cli(monkeypatch, *args):
    "Run `fastnorm export ARGS` in this process"
    from fastnorm.cli import main
    monkeypatch.setattr(sys, 'argv', ['fastnorm', 'export', *map(str, args)])
    main()

def test_cli_export(tiny_fsdd, tmp_path, monkeypatch, capsys):
    cli(monkeypatch, '--out', tmp_path/'cli', '--data', tiny_fsdd, '--split', 'test', '--scheme', 'aliased',
        '--size', '28x28', '--no-progress', '--device', 'cpu')
    assert capsys.readouterr().out.strip() == str(tmp_path/'cli')
    assert np.load(tmp_path/'cli'/'data.npy').shape == (40, 28, 28)
    assert json.loads((tmp_path/'cli'/'export.json').read_text())['settings']['scheme'] == 'aliased'
    with pytest.raises(SystemExit, match='fastnorm export: error: .* exists: use --resume'):
        cli(monkeypatch, '--out', tmp_path/'cli', '--data', tiny_fsdd)
    with pytest.raises(SystemExit, match='--out DIR is required'): cli(monkeypatch, '--data', tiny_fsdd)
    with pytest.raises(SystemExit, match=r"`scheme` must be one of .*\('x' given\)"):
        cli(monkeypatch, '--out', tmp_path/'y', '--scheme', 'x')

@pytest.mark.slow
def test_embedded_dataset_and_coloured_noise_by_default(tmp_path, monkeypatch, capsys):
    "`fastnorm export --out DIR` on a fresh install: the embedded dataset, pink noise"
    cli(monkeypatch, '--out', tmp_path/'e', '--split', 'test', '--no-progress', '--device', 'cpu')
    assert capsys.readouterr().out.strip() == str(tmp_path/'e')
    j = json.loads((tmp_path/'e'/'export.json').read_text())
    assert j['settings']['data'] == 'synth' and j['settings']['color'] == 'pink' and j['shape'] == [80, 112, 112]
    assert json.loads(next((tmp_path/'e'/'manifest').glob('*.json')).read_text())['noise'] == 'pink noise'

@needs(FSDD)
def test_fsdd_avmnist_style(tmp_path):
    "Real FSDD with AVMNIST-style labels: each row's recording says its label"
    labels = np.tile(np.arange(10), 3)
    out = run(tmp_path, data=FSDD, labels=labels, split='test', scheme='distorted')
    files = json.loads(next((out/'manifest').glob('*.json')).read_text())['files']
    assert [int(f.split('/')[-1][0]) for f in files] == labels.tolist() and len(set(files)) == 30
    assert all(int(f.split('_')[-1][:-4]) < 5 for f in files)
    d = np.load(out/'data.npy')
    assert d.shape == (30, 112, 112) and d.reshape(30, -1).min(1).max() < 40 and d.reshape(30, -1).max(1).min() > 150

def test_class_folders_resampled(tmp_path):
    "Class folders (`label/*.wav`, no train/valid: a seeded 20% is test), resampled with `sr`"
    rng = np.random.default_rng(1)
    for label in ('cat', 'dog'):
        (tmp_path/'pets'/label).mkdir(parents=True)
        for i in range(5): sf.write(tmp_path/'pets'/label/f'{i}.wav', 0.1 * rng.standard_normal(3000), SR)
    items, classes, layout = dataset_items(tmp_path/'pets')
    assert layout == 'folders' and classes == ['cat', 'dog'] and items['label'].tolist() == [0] * 5 + [1] * 5
    assert len(dataset_items(tmp_path/'pets', 'test')[0]) == 2 and len(dataset_items(tmp_path/'pets', 'train')[0]) == 8
    out = run(tmp_path, data=tmp_path/'pets', split='train', scheme='distorted', sr=4000, size='16x24')
    j = json.loads((out/'export.json').read_text())
    assert j['classes'] == ['cat', 'dog'] and j['settings']['sr'] == 4000
    assert np.load(out/'data.npy').shape == (8, 16, 24)
