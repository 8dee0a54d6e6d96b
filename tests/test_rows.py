"""Labels and rows: empty labels, files listed twice, folds that are not integers and splits without training rows are
refused, naming the csv's rows (1-based, the header is row 1)"""
import shutil, numpy as np, pandas as pd, soundfile as sf, pytest
from fastnorm.data import read_esc50_csv, esc50_dls, CrossValidationSplitter, FSDDSplitter, fsdd_items, folder_dls
from fastnorm.noise import noise_files
from fastnorm.study.datasets import resolve_data

@pytest.fixture
def esc(tiny_esc50, tmp_path):
    "A copy of the tiny dataset and a function that rewrites its csv"
    d = shutil.copytree(tiny_esc50, tmp_path/'e')
    csv = d/'meta'/'esc50.csv'
    def edit(f):
        df = pd.read_csv(csv)
        df = f(df) if f is not None else df
        df.to_csv(csv, index=False)
        return df
    return d, edit

def _blank(col, rows):
    def f(df):
        df[col] = df[col].astype(object)
        df.loc[rows, col] = np.nan
        return df
    return f

def test_empty_labels_are_refused_naming_the_first_rows(esc):
    d, edit = esc
    edit(_blank('category', [3, 7, 8, 20]))  # csv rows 5, 9, 10, 22 (the header is row 1)
    with pytest.raises(ValueError, match=r"esc50\.csv: column 'category' is empty in rows 5, 9, 10 \.\.\. \(4 rows\): "
                                         r"every clip needs a label"):
        read_esc50_csv(d)
    # the fastai path that used to fail with KeyError "Label 'nan' was not included" deep inside
    with pytest.raises(ValueError, match=r"column 'category' is empty in rows 5, 9"): esc50_dls(d, bs=4, sr=8000)

def test_a_label_of_spaces_and_one_empty_target_are_named(esc):
    d, edit = esc
    edit(lambda df: df.assign(category=df['category'].where(df.index != 2, '  ')))
    with pytest.raises(ValueError, match=r"column 'category' is empty in row 4: every clip needs a label"): read_esc50_csv(d)
    edit(lambda df: _blank('target', [0])(df.assign(category=df['category'].where(df.index != 2, 'dog'))))
    with pytest.raises(ValueError, match=r"column 'target' is empty in row 2: every clip needs a label"): read_esc50_csv(d)

def test_empty_rows_outside_the_subset_do_not_count_and_subset_rows_keep_their_csv_row(esc):
    d, edit = esc
    def f(df):
        df['esc10'] = df.index >= 10
        return _blank('category', [2, 15])(df)
    edit(f)
    with pytest.raises(ValueError, match=r"column 'category' is empty in row 17:"): read_esc50_csv(d, 'esc10')

def test_a_fold_that_is_not_an_integer_is_refused_by_value(esc):
    d, edit = esc
    edit(lambda df: df.assign(fold='fold' + df['fold'].astype(str)))
    with pytest.raises(ValueError, match=r"esc50\.csv: column 'fold' must hold integers, not 'fold1' \(rows 2, 3, 4 "
                                         r"\.\.\. \(40 rows\)\)"):
        esc50_dls(d, fold=1, bs=4, sr=8000)
    edit(lambda df: df.assign(fold=np.where(df.index == 6, '2.5', df['fold'].str[4:])))
    with pytest.raises(ValueError, match=r"column 'fold' must hold integers, not 2\.5 \(row 8\)"): read_esc50_csv(d)

def test_integer_folds_written_as_floats_read_as_integers(esc):
    d, edit = esc
    edit(lambda df: df.assign(fold=df['fold'].astype(float)))  # 1.0, 2.0: what a spreadsheet may write
    df = read_esc50_csv(d)
    assert df['fold'].dtype == np.int64 and sorted(df['fold'].unique()) == [1, 2, 3, 4, 5]

def test_a_negative_target_is_refused(esc):
    d, edit = esc
    edit(lambda df: df.assign(target=df['target'].where(df.index != 0, -1)))
    with pytest.raises(ValueError, match=r"column 'target' must hold integers >= 0, not -1 \(row 2\)"): read_esc50_csv(d)

def test_a_file_listed_twice_in_one_fold_is_refused_naming_it(esc):
    d, edit = esc
    df = edit(None)
    name = df['filename'][1]
    edit(lambda df: df.assign(filename=df['filename'].where(df.index != 0, name)))  # rows 0, 1 are in fold 1
    assert df['fold'][0] == df['fold'][1]
    with pytest.raises(ValueError, match=rf"esc50\.csv lists '{name}' 2 times \(rows 2, 3\): each clip must be listed once"):
        read_esc50_csv(d)

def test_a_file_listed_in_two_folds_is_refused_as_a_leak(esc):
    d, edit = esc
    df = edit(None)
    j = int(np.nonzero(df['fold'].to_numpy() != df['fold'][0])[0][0])
    name = df['filename'][j]
    edit(lambda df: df.assign(filename=df['filename'].where(df.index != 0, name)))
    with pytest.raises(ValueError, match=rf"lists '{name}' 2 times \(rows 2, {j + 2}\), in folds "
                                         rf"\[{min(df['fold'][0], df['fold'][j])}, {max(df['fold'][0], df['fold'][j])}\]: "
                                         r"a clip in two folds leaks the validation set into training"):
        resolve_data(str(d), 1)

def test_a_split_without_training_rows_is_refused_naming_the_fold(esc):
    d, edit = esc
    edit(lambda df: df.assign(fold=3))
    with pytest.raises(ValueError, match=r"validation fold 3 \(column 'fold'\) holds all 40 items: the split leaves no "
                                         r"training rows"):
        esc50_dls(d, fold=3, bs=4, sr=8000)
    with pytest.raises(ValueError, match=r"validation fold 3 .* no training rows"): resolve_data(str(d), 3)
    with pytest.raises(ValueError, match=r"validation fold 3"): CrossValidationSplitter(3)(read_esc50_csv(d))

def test_noise_split_without_clips_is_refused(esc):
    d, edit = esc
    edit(lambda df: df.assign(fold=5))
    with pytest.raises(ValueError, match=r"Noise folder .*e has no train clips: test_folds \[5\] hold all of them"):
        noise_files(d, 'train', test_folds=(5,))

def test_fsdd_splits_without_training_rows(tmp_path):
    for t in range(3): sf.write(tmp_path/f'1_ann_{t}.wav', np.zeros(800, np.float32), 8000)
    df = fsdd_items(tmp_path)
    with pytest.raises(ValueError, match=r"the test takes \[0, 1, 2, 3, 4\] of FSDD holds all 3 items: the split "
                                         r"leaves no training rows"):
        FSDDSplitter('take')(df)
    with pytest.raises(ValueError, match=r"test speaker 'ann' of FSDD holds all 3 items"): FSDDSplitter('speaker')(df)

def test_class_folders_with_an_empty_train_folder(tmp_path):
    for lbl in ('cat', 'dog'):
        (tmp_path/'valid'/lbl).mkdir(parents=True)
        sf.write(tmp_path/'valid'/lbl/'0.wav', np.zeros(800, np.float32), 8000)
    (tmp_path/'train').mkdir()
    with pytest.raises(ValueError, match=r"valid \(with no audio in train/\) holds all 2 items: the split leaves no "
                                         r"training rows"):
        folder_dls(tmp_path, bs=1, sr=8000)
