"""Probe-measured steering, the full-rank state coding and entity bootstrap intervals, on small
planted tables whose expected numbers follow from the construction."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from ssae_core.errors import InputError
from ssae_core.evaluation.identifiability import score_run, state_coding
from ssae_core.evaluation.probes import (
    NO_PROBE,
    ProbeConfig,
    ProbePairs,
    evaluate_probe_steering,
    fit_probes,
    labelled_texts,
    steering_effects,
)
from ssae_core.evaluation.steering_accuracy import (
    NO_LATENT,
    STATUS_OK,
    ConceptDirections,
    concept_steps,
    evaluate_steering,
    steering_setup,
)
from ssae_core.io import EmbeddingTable, PairLabels
from ssae_core.metrics import bootstrap_interval, group_resamples
from tests.test_steering import FakeModel, directions

DIM = 64
SCALE = 4.0
BINARY_STATES = {"language": ["language", "en", "fr"], "gender": ["gender", "masc", "fem"]}


def _table(
    forms: dict[str, dict[tuple[str, ...], np.ndarray]],
    pairs: list[tuple[str, tuple[str, ...], tuple[str, ...]]],
    split_of: dict[str, str],
    concepts: list[str],
    state_names: list[str],
    concept_states: dict[str, list[str]],
    shift_of,
) -> EmbeddingTable:
    """An embedding table whose pairs join two forms of one entity (``forms[entity][states]``)."""
    z = np.stack([forms[e][a] for e, a, _ in pairs])
    z_tilde = np.stack([forms[e][b] for e, _, b in pairs])
    labels = PairLabels(
        group=np.array([e for e, _, _ in pairs], dtype=object),
        x_states=np.array([a for _, a, _ in pairs], dtype=object),
        x_tilde_states=np.array([b for _, _, b in pairs], dtype=object),
        state_names=state_names,
        concept_states=concept_states,
    )
    return EmbeddingTable(
        pair_id=np.arange(len(pairs), dtype=np.int64),
        split=np.array([split_of[e] for e, _, _ in pairs], dtype=object),
        z=z.astype(np.float32),
        z_tilde=z_tilde.astype(np.float32),
        shift=np.array([shift_of(a, b) for _, a, b in pairs], dtype=np.float32),
        concepts=concepts,
        labels=labels,
    )


def binary_planted(
    entities: int = 24, num_test: int = 8, noise: float = 0.5, seed: int = 0
) -> tuple[EmbeddingTable, np.ndarray]:
    """Professions in four forms: z = base(entity) + SCALE * (1[fr] u_lang + 1[fem] u_gender);
    every ordered pair of distinct forms. Returns the table and (u_lang, u_gender)."""
    u = directions(2, DIM, seed)
    rng = np.random.default_rng(seed + 1)
    states = list(itertools.product(["en", "fr"], ["masc", "fem"]))
    forms = {}
    for p in range(entities):
        base = noise * rng.standard_normal(DIM)
        forms[f"p{p}"] = {
            s: base + SCALE * ((s[0] == "fr") * u[0] + (s[1] == "fem") * u[1]) for s in states
        }
    pairs = [(e, a, b) for e in forms for a, b in itertools.permutations(states, 2)]
    split_of = {f"p{p}": "test" if p < num_test else "train" for p in range(entities)}

    def shift(a: tuple[str, ...], b: tuple[str, ...]) -> list[float]:
        return [(b[0] == "fr") - (a[0] == "fr"), (b[1] == "fem") - (a[1] == "fem")]

    table = _table(
        forms,
        pairs,
        split_of,
        ["language", "gender"],
        ["language", "gender"],
        BINARY_STATES,
        shift,
    )
    return table, u


def cat_planted(values: int = 4, seed: int = 0) -> EmbeddingTable:
    """Phrases of 3 attributes with ``values`` values each; a concept per ordered value pair
    ``attribute:a->b`` (a before b), pairs changing one or two attributes."""
    attributes = ["shape", "colour", "object"]
    names = {a: [f"{a[0]}{i}" for i in range(values)] for a in attributes}
    concepts = [f"{a}:{x}->{y}" for a in attributes for x, y in itertools.combinations(names[a], 2)]
    concept_states = {c: [c.split(":")[0], *c.split(":")[1].split("->")] for c in concepts}
    rng = np.random.default_rng(seed)
    embed = {a: rng.standard_normal((values, DIM)) for a in attributes}
    phrases = list(itertools.product(*(range(values) for _ in attributes)))
    forms = {"all": {}}
    for code in phrases:
        states = tuple(names[a][i] for a, i in zip(attributes, code, strict=True))
        forms["all"][states] = sum(embed[a][i] for a, i in zip(attributes, code, strict=True))
    keys = list(forms["all"])
    pairs = [
        ("all", a, b)
        for a, b in itertools.permutations(keys, 2)
        if 1 <= sum(x != y for x, y in zip(a, b, strict=True)) <= 2
    ]

    def shift(a: tuple[str, ...], b: tuple[str, ...]) -> np.ndarray:
        out = np.zeros(len(concepts))
        for attribute, x, y in zip(attributes, a, b, strict=True):
            if x != y:
                low, high = sorted([x, y], key=names[attribute].index)
                out[concepts.index(f"{attribute}:{low}->{high}")] = 1.0 if x == low else -1.0
        return out

    return _table(forms, pairs, {"all": "train"}, concepts, attributes, concept_states, shift)


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_resamples_whole_groups():
    groups = np.repeat(["a", "b", "c"], [2, 3, 4])
    for rows in group_resamples(groups, resamples=20, seed=3):
        drawn = groups[rows]
        for g in "abc":  # a group is drawn with all its rows, so counts are multiples of its size
            assert np.count_nonzero(drawn == g) % {"a": 2, "b": 3, "c": 4}[g] == 0
        assert len(drawn) in {
            2 * i + 3 * j + 4 * k for i in range(4) for j in range(4) for k in range(4)
        }


def test_groups_that_carry_all_the_variance_widen_the_interval():
    rng = np.random.default_rng(0)
    group_means = rng.standard_normal(10)
    groups = np.repeat(np.arange(10), 50)
    values = group_means[groups] + 0.01 * rng.standard_normal(500)
    by_group = bootstrap_interval(values, groups)
    by_row = bootstrap_interval(values, np.arange(500))
    width_group = by_group.high - by_group.low
    width_row = by_row.high - by_row.low
    # 10 independent entities, not 500 pairs: the interval is about sqrt(50) times wider
    assert width_group > 4 * width_row
    std_of_mean = group_means.std() / np.sqrt(10)
    assert 2.5 * std_of_mean < width_group < 5.5 * std_of_mean
    assert by_group.n_groups == 10 and by_row.n_groups == 500


def test_one_group_per_value_is_the_iid_bootstrap():
    values = np.random.default_rng(1).exponential(size=40)
    interval = bootstrap_interval(values, np.arange(40), resamples=500, seed=7, level=0.9)
    draws = np.random.default_rng(7).integers(0, 40, size=(500, 40))
    means = values[draws].mean(axis=1)
    assert interval.low == pytest.approx(np.percentile(means, 5))
    assert interval.high == pytest.approx(np.percentile(means, 95))


def test_bootstrap_is_seeded_and_deterministic():
    values = np.random.default_rng(2).standard_normal(60)
    groups = np.arange(60) // 3
    first = bootstrap_interval(values, groups, seed=4)
    assert first == bootstrap_interval(values, groups, seed=4)
    assert first != bootstrap_interval(values, groups, seed=5)
    assert first.low < values.mean() < first.high


def test_bootstrap_rejects_bad_input():
    with pytest.raises(InputError, match="resamples"):
        bootstrap_interval(np.ones(3), [0, 1, 2], resamples=0)
    with pytest.raises(InputError, match="level"):
        bootstrap_interval(np.ones(3), [0, 1, 2], level=95)
    with pytest.raises(InputError, match="values"):
        bootstrap_interval(np.ones(4), [0, 1, 2])


# --------------------------------------------------------------------------- full-rank coding


def test_state_coding_of_a_binary_like_set_is_the_shift_coding():
    table, _ = binary_planted()
    coding = state_coding(table.labels)
    assert coding.columns == ["language=fr", "gender=fem"]
    assert coding.references == {"language": "en", "gender": "masc"}
    np.testing.assert_array_equal(coding.codes_NC, table.shift)
    assert coding.rank == 2


def test_state_coding_of_a_cat_like_set_has_full_rank():
    table = cat_planted(values=4)
    coding = state_coding(table.labels)
    assert table.shift.shape[1] == 18  # 3 attributes x C(4, 2) contrasts
    assert len(coding.columns) == 9 and coding.rank == 9  # 3 attributes x (4 - 1) values
    assert coding.columns[:3] == ["shape=s1", "shape=s2", "shape=s3"]
    # the contrasts' mean-difference vectors span 9 dimensions, not 18
    single = np.count_nonzero(table.shift, axis=1) == 1
    mean_diff = np.stack(
        [table.delta[single & (table.shift[:, k] == 1)].mean(axis=0) for k in range(18)]
    )
    assert np.linalg.matrix_rank(mean_diff, tol=1e-3) == 9
    # a contrast is a signed pair of state columns: shape:s1->s3 = +1 is shape=s3 +1, shape=s1 -1
    k = table.concepts.index("shape:s1->s3")
    rows = single & (table.shift[:, k] != 0)
    np.testing.assert_array_equal(coding.codes_NC[rows, 2], table.shift[rows, k])
    np.testing.assert_array_equal(coding.codes_NC[rows, 0], -table.shift[rows, k])


def test_score_run_reports_the_state_coding_mcc_next_to_the_shift_mcc():
    from ssae_core.train import TrainConfig, train

    table, _ = binary_planted()
    cfg = TrainConfig(method="aff", latent_dim=2, seeds=(0,), epochs=2, min_steps=0)
    models = train(table.subset("train").delta, cfg, progress=False).models
    test = table.subset("test")
    out = score_run(models, test)
    assert out["state_mcc"]["values"] == out["mcc"]["values"]  # binary: the same coding
    assert out["state_mcc"]["n_columns"] == 2 and out["state_mcc"]["rank"] == 2
    unlabelled = score_run(models, EmbeddingTable(**{**vars(test), "labels": None}))
    assert "state_mcc" not in unlabelled and unlabelled["mcc"] == out["mcc"]


# --------------------------------------------------------------------------- probes


def test_probes_never_see_test_texts():
    table, _ = binary_planted()
    train = table.subset("train")
    probes = fit_probes(train, ProbeConfig())
    train_ids = set(train.pair_id.tolist())
    test_ids = set(table.subset("test").pair_id.tolist())
    for probe in probes.values():
        assert set(probe.train_pair_ids.tolist()) <= train_ids
        assert not set(probe.train_pair_ids.tolist()) & test_ids
        assert probe.n_train_texts == 16 * 4  # 16 training professions x 4 forms, deduplicated
    texts = labelled_texts(train)
    test_rows = {
        row.tobytes()
        for row in np.concatenate([table.subset("test").z, table.subset("test").z_tilde]).astype(
            np.float64
        )
    }
    assert not {row.tobytes() for row in texts.z_TD} & test_rows
    out = evaluate_probe_steering(table)
    assert out["probes"]["language"]["n_train_texts"] == 64
    assert out["probes"]["language"]["n_test_texts"] == 32
    assert out["probes"]["language"]["test_accuracy"] == 1.0


def _effects(table: EmbeddingTable, vectors_KD: np.ndarray, alpha: float):
    """The probe effects of steering ``table``'s test pairs by hand-made vectors and alpha."""
    setup = steering_setup(table, None, None, "train", "test")
    probes = fit_probes(setup.train, ProbeConfig())
    pairs = ProbePairs.of(setup.test, setup.pairs, setup.target_names, probes)
    alpha_K = np.full(len(vectors_KD), alpha)
    directions = ConceptDirections(vectors_KD, alpha_K, np.zeros(len(alpha_K), np.int64), None)
    return steering_effects(pairs, probes, concept_steps(directions, pairs.concept_N, pairs.sign_N))


def test_the_planted_direction_flips_every_pair_and_a_random_one_about_none():
    table, u = binary_planted()
    out = evaluate_probe_steering(table)
    md = out["methods"]["md"]
    for concept in ("language", "gender"):
        assert md["concepts"][concept]["flip_rate"]["mean"] == 1.0  # MD = the planted direction
        assert md["concepts"][concept]["random"]["flip_rate"]["mean"] < 0.1
        assert out["concepts"][concept]["identity"]["flip_rate"] == 0.0
        assert out["concepts"][concept]["test_md"]["flip_rate"] == 1.0
    assert md["common"]["flip_rate"]["mean"] == 1.0
    assert md["common"]["random_flip_rate"]["mean"] < 0.1
    perfect = _effects(table, u, SCALE)
    assert np.nanmean(perfect.flip_N) == 1.0
    assert np.nanmean(perfect.target_probability_N) > 0.9


def test_selectivity_is_zero_for_a_clean_vector_and_large_for_an_entangled_one():
    table, u = binary_planted()
    clean = _effects(table, u, SCALE)
    mixed_KD = np.stack([u[0] + u[1], u[1] + u[0]]) / np.sqrt(2)
    entangled = _effects(table, mixed_KD, SCALE * np.sqrt(2))
    assert np.nanmean(clean.selectivity_N) < 0.02
    # it also moves the other variable by SCALE: half the pairs out of their state (change ~1),
    # the other half deeper into it (change ~0)
    assert np.nanmean(entangled.selectivity_N) > 0.4
    assert np.mean(entangled.selectivity_N > 0.5) == pytest.approx(0.5, abs=0.1)
    assert np.nanmean(entangled.flip_N) == 1.0  # and still flips its own: flip rate misses it


def test_a_set_without_another_variable_reports_no_selectivity():
    table, _ = binary_planted()
    one = EmbeddingTable(
        **{
            **vars(table),
            "shift": table.shift[:, :1],
            "concepts": ["language"],
            "labels": PairLabels(
                table.labels.group,
                table.labels.x_states[:, :1],
                table.labels.x_tilde_states[:, :1],
                ["language"],
                {"language": BINARY_STATES["language"]},
            ),
        }
    )
    keep = (table.shift[:, 1] == 0) & (table.shift[:, 0] != 0)
    out = evaluate_probe_steering(one.select(keep))
    assert out["concepts"]["language"]["other_variables"] == []
    assert out["methods"]["md"]["concepts"]["language"]["selectivity"] is None
    assert out["methods"]["md"]["common"]["selectivity"]["mean"] is None
    assert out["common_set"]["n_selectivity_concepts"] == 0


def test_an_unmatched_concept_fails_in_the_all_concepts_column_and_leaves_the_common_set():
    table, u = binary_planted()
    one_latent = FakeModel(u[:1])  # a single latent: gender cannot be matched
    out = evaluate_probe_steering(table, {"one": [one_latent]})
    assert out["common_set"]["concepts"] == ["language"] and out["common_set"]["n_concepts"] == 1
    assert out["common_set"]["n_with_test_pairs"] == 2
    one = out["methods"]["one"]
    assert one["concepts"]["gender"]["status"] == NO_LATENT
    assert one["concepts"]["language"]["status"] == STATUS_OK
    assert one["common"]["flip_rate"]["mean"] == 1.0
    assert one["all_concepts"]["flip_rate"]["mean"] == 0.5  # (1 + 0) / 2
    assert one["all_concepts"]["n_unmatched"] == [1]
    lang_gain = one["concepts"]["language"]["cosine_gain"]["mean"]
    assert one["all_concepts"]["cosine_gain"]["mean"] == pytest.approx(lang_gain / 2, abs=1e-6)
    md = out["methods"]["md"]
    assert md["all_concepts"]["flip_rate"]["mean"] == 1.0 and md["all_concepts"]["n_unmatched"] == [
        0
    ]
    # the common column of md is over language only, like every other method's
    assert md["common"]["cosine_gain"]["mean"] == md["concepts"]["language"]["cosine_gain"]["mean"]


def test_cosine_gain_agrees_with_the_existing_cosine_evaluation():
    table, u = binary_planted(noise=2.0)
    models = {"fake": [FakeModel(u + 0.3 * directions(2, DIM, 5))]}
    probes = evaluate_probe_steering(table, models)
    cosine = evaluate_steering(table, models)
    for method in ("md", "fake"):
        for concept in ("language", "gender"):
            mine = probes["methods"][method]["concepts"][concept]["cosine_gain"]["mean"]
            theirs = cosine["methods"][method]["concepts"][concept]["gain"]["mean"]
            assert mine == pytest.approx(theirs, abs=2e-6)


def test_intervals_cover_the_estimate_and_count_test_entities():
    table, _ = binary_planted(noise=3.0)
    out = evaluate_probe_steering(table, config=ProbeConfig(resamples=200))
    md = out["methods"]["md"]["common"]
    assert md["flip_rate_interval"]["n_groups"] == 8 == out["n_test_entities"]
    assert (
        md["flip_rate_interval"]["low"]
        <= md["flip_rate"]["mean"]
        <= md["flip_rate_interval"]["high"]
    )
    assert md["cosine_gain_interval"]["low"] < md["cosine_gain_interval"]["high"]
    again = evaluate_probe_steering(table, config=ProbeConfig(resamples=200))
    assert json.dumps(again, sort_keys=True) == json.dumps(out, sort_keys=True)


def test_probes_fitted_earlier_give_the_same_report():
    table, _ = binary_planted(noise=3.0)
    config = ProbeConfig(resamples=50)
    fitted = fit_probes(table.subset("train"), config)
    given = evaluate_probe_steering(table, config=config, probes=fitted)
    own = evaluate_probe_steering(table, config=config)
    assert json.dumps(given, sort_keys=True) == json.dumps(own, sort_keys=True)


def test_the_ceiling_searches_multiples_of_its_own_alpha():
    table, _ = binary_planted(noise=0.5)
    out = evaluate_probe_steering(table, config=ProbeConfig(ceiling_multiples=(0.25, 1.0, 2.0)))
    ceiling = out["concepts"]["language"]["test_md"]
    assert ceiling["alpha"] == pytest.approx(SCALE, rel=1e-5)
    assert ceiling["alpha_multiple"] == 1.0  # 0.25 moves a quarter of the way: no flip
    assert ceiling["cosine_alpha_multiple"] == 1.0  # z + delta = z~ exactly: cosine 1
    assert ceiling["cosine"] == pytest.approx(1.0, abs=1e-6)


def test_ood_probes_are_trained_on_the_target_texts():
    source, _ = binary_planted(seed=0)
    target, _ = binary_planted(seed=0, entities=12, num_test=4, noise=0.3)
    out = evaluate_probe_steering(source, target=target, concept_map={"gender": "gender"})
    assert out["probe_table"] == "target"
    assert out["probes"]["gender"]["n_train_texts"] == 8 * 4
    assert list(out["concepts"]) == ["gender"]
    assert out["methods"]["md"]["concepts"]["gender"]["flip_rate"]["mean"] == 1.0


def test_bad_input_is_one_line():
    table, _ = binary_planted()
    with pytest.raises(InputError, match="labels"):
        evaluate_probe_steering(EmbeddingTable(**{**vars(table), "labels": None}))
    with pytest.raises(InputError, match="l2"):
        ProbeConfig(l2=0)
    with pytest.raises(InputError, match="ceiling_multiples"):
        ProbeConfig(ceiling_multiples=())


def test_a_variable_with_one_training_value_has_no_probe():
    table, _ = binary_planted()
    labels = table.labels
    only_masc = np.where(table.split[:, None] == "train", "masc", labels.x_states)
    only_masc_tilde = np.where(table.split[:, None] == "train", "masc", labels.x_tilde_states)
    x_states = np.column_stack([labels.x_states[:, 0], only_masc[:, 1]])
    x_tilde_states = np.column_stack([labels.x_tilde_states[:, 0], only_masc_tilde[:, 1]])
    relabelled = EmbeddingTable(
        **{
            **vars(table),
            "labels": PairLabels(
                labels.group, x_states, x_tilde_states, labels.state_names, labels.concept_states
            ),
        }
    )
    out = evaluate_probe_steering(relabelled)
    assert out["probes"]["gender"]["status"] == NO_PROBE
    assert out["concepts"]["gender"]["status"] == NO_PROBE
    assert out["common_set"]["concepts"] == ["language"]
    assert out["methods"]["md"]["concepts"]["language"]["selectivity"] is None
