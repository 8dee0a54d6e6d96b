"fastai's interpretation on spectrograms: `plot_top_losses` draws each top-loss spectrogram with its axes and title"
import re
import matplotlib.pyplot as plt, pytest, torch
from fastai.interpret import ClassificationInterpretation
from fastnorm.all import esc50_dls, FreqSpecNorm
from fastnorm.study import make_learner

@pytest.mark.slow
@pytest.mark.parametrize('cache', [True, False])
def test_plot_top_losses_titles_and_axes(tiny_esc50, cache):
    dls = esc50_dls(tiny_esc50, fold=1, bs=8, wave_norm=True, cache=cache, batch_tfms=[FreqSpecNorm()], progress=False,
                    num_workers=0)
    learn = make_learner(dls, 'xresnet18_tiny')
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    interp = ClassificationInterpretation.from_learner(learn)
    losses, idx = interp.top_losses(3)
    plt.close('all')
    interp.plot_top_losses(3)
    fig = plt.gcf()
    imgs = [ax for ax in fig.axes if ax.images and ax.get_title()]
    assert len(imgs) == 3 and fig._suptitle.get_text() == 'Prediction/Actual/Loss/Probability'
    vocab, y = dls.vocab, [int(dls.valid.dataset[int(i)][1]) for i in idx]
    probs = learn.get_preds(dl=dls.valid)[0][idx]
    for ax, l, yi, p in zip(imgs, losses, y, probs):
        m = re.fullmatch(r'(\w+)/(\w+) / (\d+\.\d\d) / (\d\.\d\d)', ax.get_title())
        assert m, ax.get_title()
        assert m[1] == vocab[int(p.argmax())] and m[2] == vocab[yi]
        assert float(m[3]) == pytest.approx(float(l), abs=.005) and float(m[4]) == pytest.approx(float(p.max()), abs=.005)
        assert ax.get_xlabel() == 'time (s)' and ax.get_ylabel() == 'Hz'
        assert ax.get_xlim() == pytest.approx((0, 1.0), abs=.02)  # tiny_esc50's clips last 1 s
        assert ax.images[0].get_array().shape == dls.one_batch()[0].shape[-2:]
    plt.close('all')
