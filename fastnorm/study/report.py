"Reporting a comparison: the summary table (mean, std, 95% CI, paired test against the baseline) and its plots."
from __future__ import annotations
import math
from pathlib import Path
import numpy as np, pandas as pd
from scipy import stats as sps
from ..utils import atomic_path

__all__ = ['summarize', 'summary_markdown', 'unit_note', 'fold_markdown', 'summarize_shifts', 'shift_markdown',
           'summarize_adaptation', 'adaptation_markdown', 'plot_adaptation', 'plot_comparison', 'plot_curves',
           'save_figure', 'write_report']

NOISE = 1e-6  # a mean or interval below this is float noise (accuracies are counts over at most millions of clips)

def _ci95(x):
    x = np.asarray(x, float)
    if len(x) < 2:
        return float('nan')
    return float(sps.t.ppf(.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))

def summarize(results:pd.DataFrame, # a row per run: norm, run, seed, final_acc, ...
              baseline:str='none', # the normalization the others are compared with
              metric:str='final_acc', order=None)->pd.DataFrame:
    """Per normalization: n, mean, std, 95% CI half-width, and the paired difference to `baseline` over the models
    sharing a seed and (under cross-validation, a `fold` column) a validation fold"""
    rows = []
    pair = ['seed', 'fold'] if 'fold' in results else ['seed']
    base = results[results['norm'] == baseline].set_index(pair)[metric]
    for norm in (order or results['norm'].unique()):
        r = results[results['norm'] == norm]
        if not len(r):
            continue
        x = r[metric].to_numpy(float)
        std = x.std(ddof=1) if len(x) > 1 else float('nan')
        row = dict(norm=norm, n=len(x), mean=x.mean(), std=std, ci95=_ci95(x))
        if norm != baseline:
            paired = r.set_index(pair)[metric].align(base, join='inner')
            d = (paired[0] - paired[1]).to_numpy(float)
            p = float(sps.ttest_rel(paired[0], paired[1]).pvalue) if len(d) > 1 and d.std() > NOISE else float('nan')
            row.update(diff=d.mean() if len(d) else float('nan'), diff_ci95=_ci95(d), n_pairs=len(d), p_value=p)
        rows.append(row)
    return pd.DataFrame(rows)

def _f(v, fmt='{:.4f}'):
    "`v` formatted, or a dash for a missing value"
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return '–'
    return fmt.format(0. if abs(v) < NOISE else v)  # float noise prints as 0, not -0.0000

def _ci(r:dict)->str:
    "A summary row's 95% CI as 'low – high'"
    return f"{_f(r['mean'] - r['ci95'])} – {_f(r['mean'] + r['ci95'])}" if not math.isnan(r['ci95']) else '–'

def _diff(r:dict, n_pairs:int)->str:
    "A summary row's paired difference to the baseline, '±' its 95% CI, with the number of pairs"
    return f"{_f(r.get('diff'), '{:+.4f}')} ± {_f(r.get('diff_ci95'))} (n={n_pairs})"

def summary_markdown(summary:pd.DataFrame, cfg=None, n_classes:int|None=None,
                     legend:dict|None=None, # normalization -> what it does, for the note under the table
                    )->str:
    "The summary as a markdown table, with the settings that made it"
    base = summary['norm'][summary['diff'].isna()].iloc[0] if 'diff' in summary else summary['norm'].iloc[0]
    lines = [f"| normalization | n | mean acc | std | 95% CI | diff vs {base} (paired) | p (paired t) |",
             "|---|---|---|---|---|---|---|"]
    for r in summary.to_dict('records'):
        is_base = r['norm'] == base
        diff = '' if is_base else _diff(r, int(r.get('n_pairs', 0)))
        p = '' if is_base else _f(r.get('p_value'), '{:.3g}')
        lines.append(f"| {r['norm']} | {r['n']} | {_f(r['mean'])} | {_f(r['std'])} | {_ci(r)} | {diff} | {p} |")
    cv = cfg is not None and len(getattr(cfg, 'cv', (1,))) > 1
    head = "## Normalization comparison\n\n"
    if cfg is not None:
        head += (f"data `{cfg.data}`" + (f" (subset {cfg.subset})" if getattr(cfg, 'subset', None) else '')
                 + f" {_where(cfg)}, arch `{cfg.arch}`, {cfg.epochs} epochs, bs {cfg.bs}, lr {cfg.lr}, "
                 f"spectrogram `{cfg.spec}`, SpecAugment {cfg.specaugment or 'off'}, stats frac {cfg.frac}, "
                 f"seeds {cfg.seed}..{cfg.seed + cfg.runs - 1}"
                 + (f", chance {1/n_classes:.3f}" if n_classes else '') + "\n\n")
    notes = ('; '.join(f"`{n}`: {legend[n]}" for n in summary['norm'] if n in legend) if legend is not None else
             "`none`: raw log-mel; `wave`: per-clip waveform AudioNormalize only; `global`/`channel`: "
             "AudioNormalize, then one statistic for the whole spectrogram / one per mel bin, computed on the training "
             "folds; `instance`: AudioNormalize, then each spectrogram by its own mean and std; `imagenet`: each "
             "spectrogram min-max scaled to [0,1] like an image, then ImageNet's mean and std")
    return head + '\n'.join(lines) + '\n\n' + notes + '. ' + unit_note(cv) + '\n'

def _where(cfg)->str:
    "Which split the models validate on, in words"
    if getattr(cfg, 'speaker', None):
        return f"speaker {cfg.speaker} held out"
    folds = tuple(getattr(cfg, 'cv', (cfg.fold,)))
    if len(folds) == 1:
        return f"fold {folds[0]}"
    contiguous = folds == tuple(range(folds[0], folds[0] + len(folds)))
    text = f"{folds[0]}-{folds[-1]}" if contiguous else ','.join(map(str, folds))
    return f"{len(folds)}-fold cross-validation (folds {text}: each validates once, the others train)"

def unit_note(cv:bool)->str:
    "What the summary's n, CI and paired test are over"
    if not cv:
        return ("Accuracy is the final epoch's on the validation set; the 95% CI is the t-interval of the mean over "
                "runs; the paired difference pairs runs that share a seed.")
    return ("Accuracy is the final epoch's on each model's validation fold. n counts models, one per (run, fold); the "
            "mean over them is the cross-validated accuracy (every fold weighs the same), the 95% CI is the t-interval "
            "of that mean over the n models, and the paired difference and t-test pair the models that share a seed "
            "and a validation fold. Folds are not independent samples (their training sets overlap), so read the "
            "interval as a guide, not an exact test.")

def fold_markdown(results:pd.DataFrame, # a row per (norm, run, fold) model
                  order=None, metric:str='final_acc')->str:
    "Cross-validation per fold: each normalization's mean accuracy on each validation fold (over runs)"
    folds = sorted(int(f) for f in results['fold'].unique())
    norms = [n for n in (order or results['norm'].unique()) if n in set(results['norm'])]
    by = results.groupby(['norm', 'fold'])[metric].mean()
    header = "| normalization | " + ' | '.join(f"fold {f}" for f in folds) + " | mean | std over folds |"
    lines = ["## Per validation fold\n", "Mean accuracy on each validation fold (over runs), and the spread over folds "
             "of those means:\n", header, '|---|' + '---|' * (len(folds) + 2)]
    for n in norms:
        m = np.array([by.get((n, f), np.nan) for f in folds], float)
        ok = m[~np.isnan(m)]
        std = ok.std(ddof=1) if len(ok) > 1 else float('nan')
        lines.append(f"| {n} | " + ' | '.join(_f(v) for v in m) + f" | {_f(ok.mean() if len(ok) else np.nan)} "
                     f"| {_f(std)} |")
    return '\n'.join(lines) + '\n'

def summarize_shifts(results:pd.DataFrame, # rows with `final_acc` and an `acc@<shift>` column per shift
                     shifts, # shift names, e.g. ['gain:-20', 'noise:10']
                     baseline:str='none', order=None)->pd.DataFrame:
    """Per shift and normalization: mean accuracy with its 95% CI, the drop from the same models' unshifted accuracy
    (paired per run), and the paired difference to `baseline` under that shift"""
    out = []
    for sh in shifts:
        col = f'acc@{sh}'
        r = results.dropna(subset=[col]).assign(drop=lambda d: d[col] - d['final_acc'])
        s = summarize(r, baseline=baseline, metric=col, order=order)
        d = summarize(r, baseline=baseline, metric='drop', order=order)[['norm', 'mean', 'ci95']]
        s = s.merge(d.rename(columns={'mean': 'drop', 'ci95': 'drop_ci95'}), on='norm', how='left')
        out.append(s.assign(shift=sh))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()

def shift_markdown(shift_summary:pd.DataFrame, baseline:str='none')->str:
    "An overview (mean accuracy under each shift, and its drop), then a table per shift with CIs and paired diffs"
    shifts = list(dict.fromkeys(shift_summary['shift']))
    norms = list(dict.fromkeys(shift_summary['norm']))
    lines = ["## Under deployment shifts\n",
             "Mean validation accuracy under each shift (in brackets its change from the same models' unshifted "
             "accuracy):\n",
             "| normalization | " + ' | '.join(shifts) + ' |', '|---|' + '---|' * len(shifts)]
    by = shift_summary.set_index(['shift', 'norm'])
    for n in norms:
        cells = [f"{_f(by.loc[(sh, n), 'mean'])} ({_f(by.loc[(sh, n), 'drop'], '{:+.4f}')})" if (sh, n) in by.index
                 else '–' for sh in shifts]
        lines.append(f"| {n} | " + ' | '.join(cells) + ' |')
    for sh in shifts:
        lines += ['', f"### {sh}", '',
                  "| normalization | n | mean acc | 95% CI | change from unshifted (paired) "
                  f"| diff vs {baseline} (paired) | p (paired t) |",
                  '|---|---|---|---|---|---|---|']
        for r in shift_summary[shift_summary['shift'] == sh].to_dict('records'):
            drop = f"{_f(r['drop'], '{:+.4f}')} ± {_f(r['drop_ci95'])}"
            base = r['norm'] == baseline or 'diff' not in r
            diff = '' if base else _diff(r, int(r.get('n_pairs', 0) or 0))
            p = '' if base else _f(r.get('p_value'), '{:.3g}')
            lines.append(f"| {r['norm']} | {r['n']} | {_f(r['mean'])} | {_ci(r)} | {drop} | {diff} | {p} |")
    lines.append("\nEach shift is applied to the validation waveforms before the spectrogram (the noise with a fixed "
                 "seed, the same for every model); the change pairs each model with itself unshifted, the difference "
                 f"to {baseline} pairs models as in the table above; ± is the 95% t-interval.\n")
    return '\n'.join(lines)

def summarize_adaptation(results:pd.DataFrame, # rows with `acc@<shift>|<method>` columns (`Adapted`)
                         shifts, # shift names; 'none' is the unshifted clips (`final_acc` as trained)
                         methods, # adaptation methods
                         order=None)->pd.DataFrame:
    """Per normalization, shift and method (`match`, or `match/16` for one adapted on 16 clips): accuracy as trained
    and adapted (means), and the paired change (each model with itself as trained) with its 95% CI"""
    rows = []
    for n in (order or results['norm'].unique()):
        for sh in ['none', *shifts]:
            before = 'final_acc' if sh == 'none' else f'acc@{sh}'
            for m in methods:
                col = f'acc@{sh}|{m}'
                r = results[results['norm'] == n]
                if col not in r or before not in r: continue
                r = r.dropna(subset=[col, before])
                if not len(r): continue
                d = (r[col] - r[before]).to_numpy(float)
                rows.append(dict(norm=n, shift=sh, method=m, n=len(r), before=r[before].mean(), after=r[col].mean(),
                                 change=d.mean(), change_ci95=_ci95(d)))
    return pd.DataFrame(rows)

def adaptation_markdown(adapt_summary:pd.DataFrame)->str:
    "A table per normalization: accuracy as trained and adapted by each method, under each shift, with the change"
    methods = list(dict.fromkeys(adapt_summary['method']))
    lines = ["## Adapted to the new clips, without labels\n",
             "Mean accuracy as trained and after each adaptation (in brackets the change, each model paired with "
             "itself as trained, ± its 95% CI). Each half of the validation fold is scored with the model adapted to "
             "the other half's clips under the same shift (`method/N`: to N of them; more parts when N is more than "
             "half the fold), so no clip is scored by statistics it helped estimate.\n"]
    for n, g in adapt_summary.groupby('norm', sort=False):
        lines += [f"### {n}\n", "| shift | n | as trained | " + ' | '.join(methods) + ' |',
                  '|---|---|---|' + '---|' * len(methods)]
        for sh, h in g.groupby('shift', sort=False):
            by = h.set_index('method')
            cell = lambda m: f"{_f(by.loc[m, 'after'])} ({_f(by.loc[m, 'change'], '{:+.4f}')} ± " \
                             f"{_f(by.loc[m, 'change_ci95'])})"
            cells = [cell(m) if m in by.index else '–' for m in methods]
            lines.append(f"| {sh} | {int(h['n'].max())} | {_f(h['before'].iloc[0])} | " + ' | '.join(cells) + ' |')
        lines.append('')
    return '\n'.join(lines)

def plot_adaptation(adapt_summary:pd.DataFrame, path):
    "Bars per shift: accuracy as trained and after each adaptation, one panel per normalization; saved to `path`"
    import matplotlib.pyplot as plt
    norms, methods = list(dict.fromkeys(adapt_summary['norm'])), list(dict.fromkeys(adapt_summary['method']))
    fig, axs = plt.subplots(len(norms), 1, figsize=(8, 3 * len(norms)), squeeze=False)
    w = .8 / (len(methods) + 1)
    for ax, n in zip(axs[:, 0], norms):
        g = adapt_summary[adapt_summary['norm'] == n]
        shifts = list(dict.fromkeys(g['shift']))
        xs = np.arange(len(shifts))
        first = g.drop_duplicates('shift').set_index('shift').reindex(shifts)
        ax.bar(xs - .4 + w / 2, first['before'], w, label='as trained', color='#969696')
        for k, m in enumerate(methods):
            t = g[g['method'] == m].set_index('shift').reindex(shifts)
            ax.bar(xs - .4 + w / 2 + w * (k + 1), t['after'], w, label=m, color=f'C{k}')
        ax.set_xticks(xs)
        ax.set_xticklabels(shifts)
        ax.set_ylim(0, 1)
        ax.set_ylabel('validation accuracy')
        ax.set_title(f'{n}: as trained and adapted to each shift without labels')
        ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    save_figure(fig, path)
    return fig

def save_figure(fig, path):
    "Write `fig` to `path` as PNG atomically (a temporary file, then a rename) and close it"
    import matplotlib.pyplot as plt
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches='tight', format='png')
    plt.close(fig)

def _denoised(v)->np.ndarray:
    "`v` with float noise made exactly zero, so a plot never draws a change of 1e-9 as a bar or scales an axis to it"
    v = np.asarray(v, float)
    return np.where(np.abs(v) < NOISE, 0., v)

def _min_span(ax, half:float=.02):
    "Keep at least ±`half` around zero on `ax`'s y axis (all-zero changes read as zero, not as a tiny scale)"
    lo, hi = ax.get_ylim()
    ax.set_ylim(min(lo, -half), max(hi, half))

def plot_comparison(results:pd.DataFrame, summary:pd.DataFrame, path, metric:str='final_acc', order=None,
                    shift_summary:pd.DataFrame|None=None, # from `summarize_shifts`: each shift's accuracy and drop
                   ):
    """Bars of mean accuracy with 95% CI error bars and each model's dot; with shifts, grouped bars per shift and a
    panel of drops. Saved to `path`; returns the (closed) figure"""
    import matplotlib.pyplot as plt
    order = [n for n in (order or summary['norm']) if n in set(summary['norm'])]
    s = summary.set_index('norm').loc[order]
    xs = np.arange(len(order))
    if shift_summary is not None and len(shift_summary):
        shifts = list(dict.fromkeys(shift_summary['shift']))
        fig, (ax, ax2) = plt.subplots(2, 1, figsize=(2.5 + 1.3*len(order), 7), sharex=True)
        w = .8 / (len(shifts) + 1)
        ax.bar(xs - .4 + w/2, s['mean'], w, yerr=s['ci95'].fillna(0), capsize=2, label='unshifted', color='#3182bd')
        for k, sh in enumerate(shifts):
            t = shift_summary[shift_summary['shift'] == sh].set_index('norm').reindex(order)
            off = -.4 + w/2 + w*(k + 1)
            ax.bar(xs + off, t['mean'], w, yerr=t['ci95'].fillna(0), capsize=2, label=sh, color=f'C{k + 1}')
            ax2.bar(xs + off - w/2, _denoised(t['drop']), w, yerr=_denoised(t['drop_ci95'].fillna(0)), capsize=2,
                    label=sh, color=f'C{k + 1}')
        ax.set_ylim(0, 1)
        ax.set_ylabel('validation accuracy')
        ax.set_title('Accuracy, unshifted and under each shift')
        ax2.axhline(0, color='k', lw=.8)
        _min_span(ax2)
        ax2.set_ylabel('change from unshifted (paired)')
        ax2.set_title('Accuracy change under each shift (each model paired with itself unshifted)')
        ax2.set_xticks(xs)
        ax2.set_xticklabels(order, rotation=30, ha='right')
        ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1))
        save_figure(fig, path)
        return fig
    fig, ax = plt.subplots(figsize=(1.4 + 1.3*len(order), 3.6))
    ax.bar(xs, s['mean'], yerr=s['ci95'].fillna(0), capsize=5, color='#9ecae1', edgecolor='#3182bd',
           label='mean ± 95% CI')
    rng = np.random.default_rng(0)
    for i, n in enumerate(order):
        y = results.loc[results['norm'] == n, metric].to_numpy(float)
        ax.scatter(i + rng.uniform(-.15, .15, len(y)), y, s=16, color='k', zorder=3,
                   label='a model' if i == 0 else None)
    lo = max(0., float(results[metric].min()) - .1)
    ax.set_ylim(lo, min(1., float(results[metric].max()) + .05))
    ax.set_xticks(xs)
    ax.set_xticklabels(order)
    ax.set_ylabel('validation accuracy')
    ax.set_title('Spectrogram normalization')
    ax.legend(loc='lower right', fontsize=8)
    save_figure(fig, path)
    return fig

def plot_curves(curves:pd.DataFrame, path, order=None):
    "Validation accuracy per epoch: each model (run, fold) thin, the mean over them thick"
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, n in enumerate(order or curves['norm'].unique()):
        c = curves[curves['norm'] == n]
        if not len(c):
            continue
        col = f'C{i}'
        for _, r in c.groupby(['run', 'fold'] if 'fold' in c else 'run'):
            ax.plot(r['epoch'], r['accuracy'], color=col, alpha=.3, lw=.8)
        m = c.groupby('epoch')['accuracy'].mean()
        ax.plot(m.index, m.values, color=col, lw=2, label=n)
    ax.set_xlabel('epoch')
    ax.set_ylabel('validation accuracy')
    ax.legend()
    ax.set_title('Validation accuracy per epoch')
    save_figure(fig, path)

def write_report(results:pd.DataFrame, # the comparison's rows (`results.csv`)
                 curves:pd.DataFrame, # its per-epoch rows (`curves.csv`)
                 cfg, # the `CompareConfig`: the report covers its recipes and runs only
                 shifts, # the `Shift`s asked for
                 n_classes:int, # for the chance level
                 legend:dict, # recipe -> what it does
                 out:Path, # the folder for summary.md, comparison.png, curves.png
                )->str:
    "summary.md, comparison.png and curves.png from the rows of the runs asked for; returns summary.md's text"
    asked = lambda df: df[df['norm'].isin(cfg.norms) & (df['run'] < cfg.runs) & df['fold'].isin(cfg.cv)]
    results, curves = asked(results), asked(curves)
    base = 'none' if 'none' in cfg.norms else cfg.norms[0]
    summary = summarize(results, baseline=base, order=cfg.norms)
    md = summary_markdown(summary, cfg, n_classes=n_classes, legend=legend)
    if len(cfg.cv) > 1:
        md += '\n' + fold_markdown(results, order=cfg.norms)
    conds = [s.name for s in shifts if s.column in results]
    shift_sum = summarize_shifts(results, conds, baseline=base, order=cfg.norms) if conds else None
    if shift_sum is not None:
        md += '\n' + shift_markdown(shift_sum, base)
    methods = list(dict.fromkeys(c.split('|', 1)[1] for c in results.columns if c.startswith('acc@') and '|' in c))
    adapt_sum = summarize_adaptation(results, conds, methods, order=cfg.norms)
    if len(adapt_sum):
        md += '\n' + adaptation_markdown(adapt_sum)
        plot_adaptation(adapt_sum, out/'adaptation.png')
    with atomic_path(out/'summary.md') as tmp:
        tmp.write_text(md)
    plot_comparison(results, summary, out/'comparison.png', order=cfg.norms, shift_summary=shift_sum)
    plot_curves(curves, out/'curves.png', order=cfg.norms)
    return md
