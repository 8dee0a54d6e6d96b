"The comparison's adaptation: cross-fitted halves, the columns, the report and resume"
import numpy as np, pandas as pd, pytest, torch
from torch import nn
from fastnorm.stats import StatsRecorder
from fastnorm.study import CompareConfig, run_comparison
from fastnorm.study.datasets import resolve_data, make_dls
from fastnorm.study.evaluate import Adapted, ShiftedValid, cross_fit
from test_compare import tiny_cfg, assert_counts, count_training, CountTraining  # noqa: F401 (a fixture)

@pytest.mark.parametrize('n,clips,parts', [(8, None, 2), (41, None, 2), (40, 8, 2), (80, 40, 2), (80, 64, 5),
                                           (80, 70, 8), (9, 100, 9)])
def test_cross_fit_parts(n, clips, parts):
    "Halves, or more parts when `clips` needs more than half: every clip scored once, never by what it helped adapt"
    pairs = cross_fit(n, seed=3, clips=clips)
    assert len(pairs) == parts
    scored = [i for s, _ in pairs for i in s]
    assert sorted(scored) == list(range(n))  # every clip scored exactly once
    for s, fit in pairs:
        others = n - len(s)
        assert not set(s) & set(fit) and len(fit) == (others if clips is None else min(clips, others))
    assert cross_fit(n, 3, clips) == pairs and cross_fit(n, 4, clips) != pairs

class Spy(nn.Module):
    "Logs the clips (their constant value) it sees while its BatchNorm re-estimates, and while it scores"
    log = []
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(1)
    def forward(self, x):
        ids = x.as_subclass(torch.Tensor)[:, 0, 0, 0].round().long().tolist()
        Spy.log.append(('adapt' if self.bn.training else 'score', ids))
        self.bn(x.as_subclass(torch.Tensor).mean((2, 3)))
        return torch.zeros(len(x), 4)

def test_no_clip_is_scored_by_what_it_helped_adapt(tiny_esc50):
    "Counted on a model that logs what it sees: halves adapt on one another, never on themselves"
    cfg = tiny_cfg(tiny_esc50, norms=('none',))
    dls = make_dls(resolve_data(str(tiny_esc50)), cfg, False, 1, False)
    conds = [Adapted(None, m) for m in ('bn', 'match+bn')]
    sv = ShiftedValid(dls, conds, bs=3, seed=0)
    n = len(sv.files)
    sv._specs[(None, False)] = torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 1, 16, 9) * 1.
    train = StatsRecorder((0, 3))
    train.update(sv.specs(None, False))
    for c in conds:
        Spy.log.clear()
        sv.accuracy(Spy(), dls, c, False, lambda: train)
        rounds, cur = [], None
        for what, ids in Spy.log:
            if what == 'adapt' and (cur is None or cur[1]): cur = [[], []]; rounds.append(cur)
            cur[0 if what == 'adapt' else 1].extend(ids)
        assert len(rounds) == 2, c
        for fit, scored in rounds: assert fit and scored and not set(fit) & set(scored)
        assert sorted(rounds[0][1] + rounds[1][1]) == list(range(n))  # each clip scored once

@pytest.mark.slow
def test_adapt_columns_report_and_resume(tiny_esc50, tmp_path, count_training):
    cfg, out = tiny_cfg(tiny_esc50, norms=('none', 'channel'), shifts=('gain:-20',), adapt=('match', 'bn')), tmp_path/'o'
    res = run_comparison(cfg, out=out, progress=False, log=lambda *_: None, cbs=[count_training])
    cols = ['acc@none|match', 'acc@none|bn', 'acc@gain:-20|match', 'acc@gain:-20|bn']
    assert list(res.columns[-5:]) == ['acc@gain:-20'] + cols
    for c in cols: assert_counts(res[c])
    md = (out/'summary.md').read_text()
    assert '## Adapted to the new clips, without labels' in md and '| gain:-20 | 1 |' in md
    assert (out/'adaptation.png').stat().st_size > 1000
    calls = len(count_training.calls)
    cfg2 = tiny_cfg(tiny_esc50, norms=('none', 'channel'), shifts=('gain:-20',), adapt=('match', 'bn', 'match+bn'))
    res2 = run_comparison(cfg2, out=out, resume=True, progress=False, log=lambda *_: None, cbs=[count_training])
    assert len(count_training.calls) == calls  # nothing trained again
    assert res2[list(res.columns)].equals(res) and 'acc@gain:-20|match+bn' in res2
    assert_counts(res2['acc@gain:-20|match+bn'])
    cfg3 = tiny_cfg(tiny_esc50, norms=('none', 'channel'), shifts=('gain:-20',), adapt=('match',), adapt_clips=8)
    res3 = run_comparison(cfg3, out=out, resume=True, progress=False, log=lambda *_: None, cbs=[count_training])
    assert len(count_training.calls) == calls and 'acc@gain:-20|match/8' in res3  # a new column, nothing trained
    assert '| match/8 |' in (out/'summary.md').read_text().replace(' | match/8', '| match/8 |')
    # `none` without waveform norm: matching on gain-shifted clips undoes the gain (up to the dB floor)
    r = res2.set_index('norm').loc['none']
    assert r['acc@gain:-20|match'] >= r['acc@gain:-20'] - 1e-9

@pytest.mark.parametrize('kw,msg', [(dict(adapt=('tent',)), r"`--adapt` must be one of"),
                                    (dict(adapt=('match',), adapt_clips=4), r"`--adapt-clips` must be"),
                                    (dict(adapt_clips=16), r"--adapt-clips needs --adapt")])
def test_bad_adapt_fails_before_training(tiny_esc50, tmp_path, count_training, kw, msg):
    with pytest.raises(ValueError, match=msg):
        run_comparison(tiny_cfg(tiny_esc50, **kw), out=tmp_path/'o', progress=False, cbs=[count_training])
    assert count_training.calls == []
