"""Semi-synthetic pair sets: word lists, splits, shifts, OOD vocabulary, coverage, determinism."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ssae_core.config import load_config
from ssae_core.datasets.semisynthetic import (
    DATASETS,
    OOD_EVALUATIONS,
    CatConfig,
    PairsConfig,
    PairSet,
    build_pairs,
    cat_space,
    load_wordlist,
    make_pairs,
    ood_vocabulary_overlap,
    single_concept,
    vocabulary,
    word_tokens,
)
from ssae_core.errors import InputError
from ssae_core.io import PairLabels, decode_metadata, load_pairs, write_parquet

MIN_ENTRIES = {"lang": 200, "gender": 120, "binary": 80, "corr": 80}


@pytest.fixture(scope="module")
def sets() -> dict[str, PairSet]:
    return {name: build_pairs(name) for name in DATASETS}


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _shift_of(pairs: PairSet, x: str, x_tilde: str) -> list[float]:
    rows = [i for i in range(len(pairs)) if pairs.x[i] == x and pairs.x_tilde[i] == x_tilde]
    assert len(rows) == 1, (x, x_tilde)
    return pairs.shift[rows[0]].tolist()


# --------------------------------------------------------------------------- word lists


@pytest.mark.parametrize("name", sorted(MIN_ENTRIES))
def test_wordlist_sizes_and_forms(name: str) -> None:
    words = load_wordlist(name)  # rejects duplicates and missing forms
    assert len(words.rows) >= MIN_ENTRIES[name]
    assert all(len(row) == len(words.columns) and all(row) for row in words.rows)
    texts = [cell.casefold() for row in words.rows for cell in row]
    assert len(texts) == len(set(texts))


def test_binary_forms_follow_the_convention() -> None:
    words = load_wordlist("binary")
    assert words.columns == ("en_masc", "en_fem", "fr_masc", "fr_fem")
    for en_masc, en_fem, _, _ in words.rows:
        # either a lexical pair, or the epicene noun with "male"/"female" as its only modifier
        if en_masc.startswith("male "):
            assert en_fem == "fe" + en_masc
        else:
            assert "male" not in word_tokens(en_masc + " " + en_fem)


def test_cat_wordlist() -> None:
    space = cat_space()
    assert [len(v) for v in space.values] == [10, 10, 10]
    assert len(set(space.phrases)) == 1000
    assert len(space.concepts) == 135 == len(set(space.concepts))
    assert space.concepts[0] == "shape:round->square"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("en\tfr\nchair\tchaise\nchair\tsiège\n", "already occurs"),
        ("en\tfr\nchair\tchaise\nspoon\n", "non-empty"),
        ("en\tfr\nchair\tchaise\nspoon\t \n", "non-empty"),
        ("en\tfr\nsofa\tSofa\n", "already occurs"),
    ],
)
def test_wordlist_errors_name_the_line(tmp_path, text: str, problem: str) -> None:
    (tmp_path / "bad.tsv").write_text("# comment\n" + text)
    with pytest.raises(InputError, match=problem) as info:
        load_wordlist("bad", tmp_path)
    assert "bad.tsv:" in str(info.value)


# --------------------------------------------------------------------------- pairs and splits


@pytest.mark.parametrize("name", DATASETS)
def test_no_identical_texts(sets: dict[str, PairSet], name: str) -> None:
    pairs = sets[name]
    assert all(a.casefold() != b.casefold() for a, b in zip(pairs.x, pairs.x_tilde, strict=True))
    assert all(a.strip() and b.strip() for a, b in zip(pairs.x, pairs.x_tilde, strict=True))


@pytest.mark.parametrize("name", DATASETS)
def test_split_is_by_entity(sets: dict[str, PairSet], name: str) -> None:
    pairs = sets[name]
    assert set(pairs.split) == {"train", "test"}
    assert not pairs.entities("train") & pairs.entities("test")
    texts: dict[str, set[str]] = {"train": set(), "test": set()}
    for x, x_tilde, split in zip(pairs.x, pairs.x_tilde, pairs.split, strict=True):
        texts[split] |= {x, x_tilde}
    assert not texts["train"] & texts["test"]
    test_share = len(pairs.entities("test")) / len(set(pairs.entity))
    assert test_share == pytest.approx(0.25, abs=0.02)


def test_test_fraction_is_configurable() -> None:
    pairs = build_pairs("gender", PairsConfig(test_fraction=0.5))
    assert len(pairs.entities("test")) == len(pairs.entities("train")) == 65


def test_ood_sets_share_no_vocabulary_with_source_training_pairs() -> None:
    for seed in range(3):
        tables = {
            name: make_pairs(name, seed=seed) for name in ("lang", "gender", "binary", "corr")
        }
        for evaluation in OOD_EVALUATIONS:
            source, target = tables[evaluation.source], tables[evaluation.target]
            assert ood_vocabulary_overlap(source, target) == set(), evaluation
            assert evaluation.source_concept in decode_metadata(source.schema)[0]
            assert evaluation.target_concept in decode_metadata(target.schema)[0]
    # stronger: the whole word lists are disjoint, so every split passes
    for evaluation in OOD_EVALUATIONS:
        assert not vocabulary(tables[evaluation.source]) & vocabulary(tables[evaluation.target])


def test_vocabulary_check_catches_overlap() -> None:
    source = make_pairs("binary")
    train_word = next(iter(vocabulary(source, "train")))
    target = pa.table({"x": [f"the {train_word}"], "x_tilde": ["something"], "split": ["test"]})
    assert ood_vocabulary_overlap(source, target) == {train_word}
    assert word_tokens("Taie d'oreiller") == {"taie", "d", "oreiller"}


# --------------------------------------------------------------------------- shifts


def test_hand_checked_shifts(sets: dict[str, PairSet]) -> None:
    assert _shift_of(sets["lang"], "chair", "chaise") == [1.0]
    assert _shift_of(sets["gender"], "king", "queen") == [1.0]
    binary = sets["binary"]
    assert binary.concepts == ["language", "gender"]
    assert _shift_of(binary, "actor", "acteur") == [1.0, 0.0]
    assert _shift_of(binary, "actor", "actress") == [0.0, 1.0]
    assert _shift_of(binary, "actor", "actrice") == [1.0, 1.0]
    assert _shift_of(binary, "actrice", "actor") == [-1.0, -1.0]
    assert _shift_of(binary, "actress", "acteur") == [1.0, -1.0]
    assert _shift_of(binary, "female nurse", "infirmier") == [1.0, -1.0]
    assert _shift_of(binary, "infirmière", "male nurse") == [-1.0, -1.0]
    corr = sets["corr"]
    assert corr.concepts == ["french", "german"]
    assert _shift_of(corr, "baker", "boulanger") == [1.0, 0.0]
    assert _shift_of(corr, "baker", "Bäcker") == [0.0, 1.0]


def test_binary_has_single_and_double_changes(sets: dict[str, PairSet]) -> None:
    binary = sets["binary"]
    assert len(binary) == 12 * len(set(binary.entity))
    single = single_concept(binary.shift)
    assert single.sum() == 8 * len(set(binary.entity))
    double = set(map(tuple, binary.shift[~single].tolist()))
    assert double == {(1.0, 1.0), (-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0)}


def test_cat_shifts_are_signed_contrasts() -> None:
    space = cat_space()
    index = {name: i for i, name in enumerate(space.concepts)}
    cat = build_pairs("cat")
    for x, x_tilde, shift in zip(cat.x[:500], cat.x_tilde[:500], cat.shift[:500], strict=True):
        expected = np.zeros(len(space.concepts), dtype=np.float32)
        for attribute, (a, b) in enumerate(zip(x.split(), x_tilde.split(), strict=True)):
            if a != b:
                values = space.values[attribute]
                low, high = sorted((a, b), key=values.index)
                name = f"{('shape', 'colour', 'object')[attribute]}:{low}->{high}"
                expected[index[name]] = 1.0 if low == a else -1.0
        np.testing.assert_array_equal(shift, expected)
    for attribute in range(3):
        for a, b in itertools.permutations(range(10), 2):
            concept, sign = space.concept_index(attribute, a, b)
            low, high = sorted((a, b))
            values = space.values[attribute]
            assert space.concepts[concept].endswith(f":{values[low]}->{values[high]}")
            assert sign == (1.0 if a < b else -1.0)


def test_cat_size_and_coverage(sets: dict[str, PairSet]) -> None:
    cat = sets["cat"]
    shift = cat.shift
    split = np.array(cat.split)
    assert len(cat) >= 20_000 and shift.shape[1] == 135
    assert len({*cat.x, *cat.x_tilde}) == 1000
    assert len(set(zip(cat.x, cat.x_tilde, strict=True))) == len(cat)
    changes = np.count_nonzero(shift, axis=1)
    assert set(changes.tolist()) == {1, 2, 3}
    for name, minimum in (("train", 150), ("test", 40)):
        rows = split == name
        assert np.count_nonzero(shift[rows], axis=0).min() >= minimum
        assert np.count_nonzero(shift[rows][changes[rows] == 1], axis=0).min() >= 1


def test_cat_respects_max_changes() -> None:
    cat = build_pairs("cat", PairsConfig(cat=CatConfig(num_pairs=2000, max_changes=2)))
    assert len(cat) == 2000
    assert set(np.count_nonzero(cat.shift, axis=1).tolist()) == {1, 2}


# --------------------------------------------------------------------------- tables and API


def test_table_format_round_trip(tmp_path) -> None:
    table = make_pairs("binary")
    assert table.column_names == [
        "pair_id",
        "x",
        "x_tilde",
        "split",
        "shift",
        "group",
        "x_states",
        "x_tilde_states",
    ]
    assert table.schema.field("pair_id").type == pa.int64()
    assert table.schema.field("shift").type == pa.list_(pa.float32())
    assert table.column("pair_id").to_pylist() == list(range(table.num_rows))
    path = tmp_path / "binary.parquet"
    write_parquet(table, path)
    concepts, metadata = decode_metadata(load_pairs(path).schema)
    assert concepts == ["language", "gender"]
    assert metadata["dataset"] == "binary" and metadata["split_by"] == "profession"


@pytest.mark.parametrize("name", ["lang", "gender", "binary", "corr", "cat"])
def test_per_text_states_agree_with_the_shifts(name) -> None:
    """Every pair's states change exactly where its shift is non-zero, between the values its
    concept names, in the direction of the sign; the group is the entity of the split."""
    table = make_pairs(name)
    labels = PairLabels.from_arrow(table, name)
    concepts, _ = decode_metadata(table.schema)
    shift = np.asarray(table.column("shift").to_pylist())
    for k, concept in enumerate(concepts):
        variable, low, high = labels.concept_states[concept]
        x, x_tilde = labels.variable(variable)
        up, down = shift[:, k] > 0, shift[:, k] < 0
        assert ((x[up] == low) & (x_tilde[up] == high)).all()
        assert ((x[down] == high) & (x_tilde[down] == low)).all()
    changed = (labels.x_states != labels.x_tilde_states).sum(axis=1)
    assert (changed >= 1).all()
    split = np.asarray(table.column("split").to_pylist())
    train = set(labels.group[split == "train"])
    assert not train & set(labels.group[split == "test"])


def test_deterministic_bytes() -> None:
    for name in ("binary", "cat"):
        first = _parquet_bytes(make_pairs(name, seed=3))
        assert first == _parquet_bytes(make_pairs(name, seed=3))
        assert first != _parquet_bytes(make_pairs(name, seed=4))


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match="known sets: lang, gender, binary, corr, cat"):
        make_pairs("nope")
    with pytest.raises(InputError, match="test_fraction"):
        make_pairs("lang", test_fraction=1.0)
    with pytest.raises(InputError, match="max_changes"):
        CatConfig(max_changes=4)
    with pytest.raises(InputError, match="num_pairs"):
        make_pairs("cat", cat=CatConfig(num_pairs=900_000))
    with pytest.raises(InputError, match=r"params.yaml:pairs.cat: unknown key\(s\) pairs"):
        load_config(PairsConfig, {"cat": {"pairs": 3}}, "params.yaml:pairs")
    with pytest.raises(InputError, match=r"params.yaml:pairs.cat: expected CatConfig, got 5"):
        load_config(PairsConfig, {"cat": 5}, "params.yaml:pairs")
    config = load_config(
        PairsConfig,
        {"seed": 2, "test_fraction": 0.2, "cat": {"num_pairs": 100}},
        "params.yaml:pairs",
    )
    assert config == PairsConfig(seed=2, test_fraction=0.2, cat=CatConfig(num_pairs=100))


def test_stage_writes_the_table(tmp_path, monkeypatch) -> None:
    import stages.common
    from ssae_core.study.layout import StudyLayout
    from stages import generate_pairs

    params = tmp_path / "params.yaml"
    params.write_text("pairs:\n  seed: 1\n  test_fraction: 0.25\n")
    monkeypatch.setattr(stages.common, "PARAMS_FILE", params)
    monkeypatch.setattr(generate_pairs, "LAYOUT", StudyLayout(tmp_path))
    monkeypatch.setattr(sys, "argv", ["generate_pairs", "gender"])
    generate_pairs.main()
    out = tmp_path / "data" / "pairs" / "gender.parquet"
    assert pq.read_table(out).equals(make_pairs("gender", seed=1))
    assert not (tmp_path / "data" / "pairs" / "lang.parquet").exists()  # only the sets named


# --------------------------------------------------------------------------- contexts


@pytest.mark.parametrize("name", DATASETS)
def test_every_set_has_enough_training_pairs(sets: dict[str, PairSet], name: str) -> None:
    assert sets[name].split.count("train") >= PairsConfig().min_train_pairs


def test_contexts_repeat_each_pair_with_its_entity_and_split(sets: dict[str, PairSet]) -> None:
    gender = sets["gender"]
    contexts = gender.metadata["contexts"]
    assert len(contexts) == -(-1000 // len(gender.entities("train")))
    rows = [i for i, e in enumerate(gender.entity) if e == "king"]
    assert [gender.x[i] for i in rows] == [c.format("king") for c in contexts]
    assert [gender.x_tilde[i] for i in rows] == [c.format("queen") for c in contexts]
    assert len({gender.split[i] for i in rows}) == 1
    assert sets["binary"].metadata["contexts"] == ["{}"]  # 1,104 bare training pairs suffice
    bare = build_pairs("gender", PairsConfig(min_train_pairs=0))
    assert bare.metadata["contexts"] == ["{}"] and len(bare) == len(gender) // len(contexts)


@pytest.mark.parametrize(
    ("contexts", "problem"),
    [(["{}", "the {}"], "no letters"), (["- {}"], "start with"), (["{}", "{} {}"], "once")],
)
def test_bad_contexts(contexts: list[str], problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        PairsConfig(contexts=tuple(contexts))
