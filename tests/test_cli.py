"The `fastnorm` command's dispatch, `synth` and `compare`'s options, run in this process"
import re, sys, pytest
import fastnorm.study as fc
from fastnorm.cli import main
from fastnorm.synth import synth_esc50

def run_cli(monkeypatch, *args):
    "Run `fastnorm ARGS` here, as the console script would"
    monkeypatch.setattr(sys, 'argv', ['fastnorm', *map(str, args)])
    main()

def test_synth_writes_the_dataset_and_prints_its_folder(tmp_path, monkeypatch, capsys):
    d = tmp_path/'syn'
    run_cli(monkeypatch, 'synth', '--dest', d, '--seed', 3, '--n-classes', 2, '--clips-per-class', 5, '--seconds', .5, '--sr', 8000)
    assert capsys.readouterr().out.strip() == str(d)
    assert len(list((d/'audio').glob('*.wav'))) == 10 and (d/'meta'/'esc50.csv').is_file()
    # the same arguments through the library give the same dataset (it is found, not remade)
    assert synth_esc50(d, seed=3, n_classes=2, clips_per_class=5, seconds=.5, sr=8000) == d

def test_synth_bad_argument_is_a_clean_error(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match=r'^fastnorm synth: error: .*clips_per_class'):
        run_cli(monkeypatch, 'synth', '--dest', tmp_path/'x', '--clips-per-class', 3)
    assert not (tmp_path/'x'/'audio').exists()

def test_unknown_command_exits_2_naming_it(monkeypatch, capsys):
    with pytest.raises(SystemExit) as e: run_cli(monkeypatch, 'frobnicate', '--x')
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert "fastnorm: unknown command 'frobnicate'" in err and out.startswith('usage: fastnorm {compare,synth,export,deploy,adapt}')

def test_no_command_prints_usage_and_succeeds(monkeypatch, capsys):
    run_cli(monkeypatch)  # returns: no SystemExit
    assert capsys.readouterr().out.startswith('usage: fastnorm')

def test_compare_options_reach_the_comparison(tmp_path, monkeypatch):
    got = {}
    monkeypatch.setattr(fc, 'run_comparison', lambda cfg, **kw: got.update(cfg=cfg, **kw))
    run_cli(monkeypatch, 'compare', '--norms', 'global, channel', '--runs', 2, '--epochs', 3, '--frac', .5, '--seed', 7,
            '--out', tmp_path/'o', '--resume', '--no-progress')
    cfg = got['cfg']
    assert cfg.norms == ('global', 'channel') and (cfg.runs, cfg.epochs, cfg.frac, cfg.seed) == (2, 3, .5, 7)
    assert got['out'] == str(tmp_path/'o') and got['resume'] is True and got['progress'] is False
    run_cli(monkeypatch, 'compare')
    assert got['cfg'].norms == ('none', 'global', 'channel', 'pcen') and got['resume'] is False  # the quick preset's
    assert got['cfg'].shifts == ('gain:-20', 'tilt:-3', 'noise:10', 'resample:8000') and got['progress'] is True
    run_cli(monkeypatch, 'compare', '--shift', 'none', '--norms', 'none,channel')
    assert got['cfg'].shifts == () and got['cfg'].norms == ('none', 'channel')

def test_compare_unknown_preset_is_a_clean_error(monkeypatch):
    with pytest.raises(SystemExit, match="fastnorm compare: unknown --preset 'huge': choose from quick, paper"):
        run_cli(monkeypatch, 'compare', '--preset', 'huge')

def help_text(monkeypatch, capsys, cmd='compare')->str:
    "`fastnorm CMD --help`'s output, its whitespace (argparse's wrapping) made single spaces"
    with pytest.raises(SystemExit) as e: run_cli(monkeypatch, cmd, '--help')
    assert e.value.code == 0
    return ' '.join(capsys.readouterr().out.split())

def test_compare_help_lists_exactly_the_registries_names(monkeypatch, capsys):
    from fastnorm.study.recipes import RECIPES, Recipe
    from fastnorm.study.shift import SHIFTS
    out = help_text(monkeypatch, capsys)
    assert re.search(r'Normalizations: (.*?)\. Shifts:', out)[1].split() == list(RECIPES)
    assert re.search(r'Shifts: (.*?)\. Data folders:', out)[1].split(', ') == [e.form for e in SHIFTS.values()]
    from fastnorm.layouts import LAYOUTS
    assert re.search(r'Data folders: (.*?)\. Adaptation', out)[1] == f"{LAYOUTS['esc50'].doc}; {LAYOUTS['fsdd'].doc}"
    from fastnorm.adapt import ADAPT_METHODS
    assert re.search(r'Adaptation \(--adapt\): (.*?): each half', out)[1].split() == list(ADAPT_METHODS)
    assert 'mixstyle' in RECIPES and 'noise:SNR_DB[:white|pink]' in out
    # a new recipe is one entry: the help lists it and --norms takes it
    monkeypatch.setitem(RECIPES, 'global2', Recipe(False, doc='one more'))
    assert re.search(r'Normalizations: (.*?)\. Shifts:', help_text(monkeypatch, capsys))[1].split()[-1] == 'global2'
    got = {}
    monkeypatch.setattr(fc, 'run_comparison', lambda cfg, **kw: got.update(cfg=cfg))
    run_cli(monkeypatch, 'compare', '--norms', 'none,global2')
    assert got['cfg'].norms == ('none', 'global2')
    with pytest.raises(ValueError, match=r"Unknown normalization\(s\) \[.global3.\] .*channel\+device,global2$"):
        fc.CompareConfig(norms=('global3',)).check()
