"""`ssae inspect`: the per-latent page of a trained run, on a planted two-concept set (gender and
language of eight entities in four forms, as the binary set is built) and a tiny random Llama."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from ssae_core.errors import InputError
from ssae_core.evaluation import inspection
from ssae_core.evaluation.inspection import (
    InspectConfig,
    cross_seed_stability,
    duplicate_groups,
    inspect_files,
)
from ssae_core.evaluation.inspection_page import (
    BACKWARDS,
    PAGE_FILE,
    RESULT_FILE,
    SUMMARY_FILE,
    render_html,
    render_markdown,
)
from ssae_core.io import EmbeddingTable, pair_table, save_embeddings, write_parquet
from ssae_core.lm.embed import extract_embeddings
from ssae_core.record import NOT_CONVERGED, SLACK, STATUS_MEANINGS, USABLE
from ssae_core.runs import load_run, train_run
from ssae_core.train import TrainConfig
from tests.helpers import ssae

WIDTH = 48  # the tiny Llama's
STEP = 3.0  # the planted size of each concept's shift
CONCEPTS = ["gender", "language"]
ENTITIES = [
    ("the king", "the queen", "le roi", "la reine"),
    ("the man", "the woman", "un homme", "une femme"),
    ("the actor", "the actress", "le chat", "la maison"),
    ("the waiter", "the waitress", "le chien", "une table"),
    ("the father", "the mother", "un chat", "une chaise"),
    ("the son", "the daughter", "un chien", "une lampe"),
    ("the boy", "the girl", "le cube", "la boule"),
    ("the dog", "the cat", "le rouge", "la bleue"),
]
FORMS = [(0, 0), (1, 0), (0, 1), (1, 1)]  # (feminine, French) of each entity's four texts
FAST = InspectConfig(prompts=2, strengths=(-0.5, 1.0), max_new_tokens=4, top_k=3)


def planted_pairs(seed: int = 0) -> tuple[EmbeddingTable, list[tuple[str, str]]]:
    """Every ordered pair of distinct forms of an entity; each text's embedding is its entity's
    random base plus STEP along the gender and the language direction where it has them."""
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((2, WIDTH))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    rows = []
    for number, texts in enumerate(ENTITIES):
        base = rng.standard_normal(WIDTH)
        emb = [
            base + STEP * np.array(f) @ directions + 0.15 * rng.standard_normal(WIDTH)
            for f in FORMS
        ]
        for a in range(4):
            for b in range(4):
                if a != b:
                    shift = np.subtract(FORMS[b], FORMS[a])
                    rows.append((number, texts[a], texts[b], emb[a], emb[b], shift))
    table = EmbeddingTable(
        pair_id=np.arange(len(rows), dtype=np.int64),
        split=np.array(["test" if r[0] >= 6 else "train" for r in rows], dtype=object),
        z=np.array([r[3] for r in rows], np.float32),
        z_tilde=np.array([r[4] for r in rows], np.float32),
        shift=np.array([r[5] for r in rows], np.float32),
        concepts=CONCEPTS,
        metadata={"layer": "final"},
    )
    return table, [(r[1], r[2]) for r in rows]


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> dict:
    """The planted embedding and pair tables on disk, and an SSAE run of three seeds on them."""
    folder = tmp_path_factory.mktemp("inspect")
    table, texts = planted_pairs()
    save_embeddings(table, folder / "emb.parquet")
    pairs = pair_table(
        [x for x, _ in texts], [t for _, t in texts], list(table.split), table.shift, CONCEPTS
    )
    write_parquet(pairs, folder / "pairs.parquet")
    cfg = TrainConfig(latent_dim=2, seeds=(0, 1, 2), epochs=60, min_steps=300)
    train_run(table, folder / "run", cfg, progress=False)
    return {"folder": folder, "table": table, "texts": dict(enumerate(texts))}


@pytest.fixture(scope="module")
def page(planted: dict, tiny_lm_dir: Path) -> dict:
    folder = planted["folder"]
    result = inspect_files(
        folder / "run",
        folder / "emb.parquet",
        folder / "page",
        texts=folder / "pairs.parquet",
        lm=str(tiny_lm_dir),
        config=FAST,
        device="cpu",
        progress=False,
    )
    return {"result": result, "out": folder / "page"}


class Resources(HTMLParser):
    """Every tag, and every attribute value that could load something."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []
        self.section_ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "poster", "action") and value:
                self.links.append(value)
            if tag == "section" and name == "id":
                self.section_ids.append(value or "")


def parsed(out: Path) -> tuple[str, Resources]:
    text = (out / PAGE_FILE).read_text(encoding="utf-8")
    parser = Resources()
    parser.feed(text)
    return text, parser


# --------------------------------------------------------------------------- the parts


def test_stability_matches_seeds_one_to_one_whatever_their_order_and_sign():
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((3, 16))
    permuted = -rows[[2, 0, 1]]  # the same directions, reordered and flipped
    noisy = rows + 0.8 * rng.standard_normal(rows.shape)
    stability = cross_seed_stability([noisy, rows, permuted])
    assert stability.reference in (1, 2)  # the noisy member agrees worst with the others
    exact = cross_seed_stability([rows, permuted], reference=0)
    np.testing.assert_allclose(exact.mean_M, 1.0)
    assert [m[0][1] for m in exact.matches] == [1, 2, 0]  # latent k of rows is latent ... there
    alone = cross_seed_stability([rows])
    assert np.isnan(alone.mean_M).all() and alone.matches == [[], [], []]


def test_duplicate_latents_are_reported_with_their_cosine():
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((3, 16))
    rows[2] = -rows[0] + 0.01 * rng.standard_normal(16)
    groups = duplicate_groups(rows, 0.95)
    assert [g["latents"] for g in groups] == [[0, 2]]
    assert groups[0]["pairs"][0]["abs_cosine"] > 0.99
    assert duplicate_groups(rows[:2], 0.95) == []


def test_config_and_members_are_checked(planted: dict):
    with pytest.raises(InputError, match="strengths"):
        InspectConfig(strengths=(2.0, 2.0))
    with pytest.raises(InputError, match="prompts"):
        InspectConfig(prompts=0)
    with pytest.raises(InputError, match="language"):
        InspectConfig(language="xx")
    mixed = [*load_run(planted["folder"] / "run"), *load_run(planted["folder"] / "run")]
    for m, eps in zip(mixed, [0.5] * 3 + [1.0] * 3, strict=True):
        m.config = {**m.config, "sparsity": eps}
    with pytest.raises(InputError, match=r"several L1 budgets .*--sparsity"):
        inspection.run_members(mixed, None, "RUN")
    assert len(inspection.run_members(mixed, 1.0, "RUN")) == 3
    with pytest.raises(InputError, match="no member with L1 budget 2"):
        inspection.run_members(mixed, 2.0, "RUN")


# --------------------------------------------------------------------------- the result


def test_each_latent_finds_one_planted_concept_with_its_size(page: dict):
    result = page["result"]
    latents = result["latents"]
    assert sorted(e["best_concept"]["concept"] for e in latents) == CONCEPTS
    for entry in latents:
        concept = entry["best_concept"]["concept"]
        assert entry["best_concept"]["score"] > 0.95 and entry["matched_concept"] == concept
        assert entry["alpha"] == pytest.approx(STEP, rel=0.1)
        assert entry["alpha_by"] == inspection.ALPHA_BY_CONCEPT
        md = next(c["md_cosine"] for c in entry["concepts"] if c["concept"] == concept)
        assert md > 0.95
        assert entry["stability"]["mean"] > 0.95 and len(entry["stability"]["matches"]) == 2
        for part in ("train", "held_out"):
            pairs = entry["top_pairs"][part]
            assert len(pairs) == FAST.top_k
            assert all(p["changes"][concept] == 1 for p in pairs)  # + is +concept
            assert all(p["code"] > 0 and p["other_way"] < p["code"] for p in pairs)
            assert all((p["split"] == "train") == (part == "train") for p in pairs)
    means = [e["stability"]["mean"] for e in latents]
    assert means == sorted(means, reverse=True)
    assert result["duplicates"] == []


def test_continuations_per_strength_with_language_share_and_perplexity(page: dict):
    """Strengths are in units of the typical residual norm at the layer (as ssae steer's)."""
    result = page["result"]
    assert result["unsteered"]["prompts"] == list(inspection.NEUTRAL_PROMPTS[:2])
    norm = result["unsteered"]["norm"]
    assert norm > 0
    for entry in result["latents"]:
        sweep = entry["steering"]
        assert [c["strength"] for c in sweep] == [-0.5, 0.0, 1.0]
        for condition in sweep:
            assert len(condition["continuations"]) == len(condition["languages"]) == 2
            assert 0 <= condition["language_share"] <= 1 and condition["perplexity"] > 0
            assert condition["scale"] == pytest.approx(condition["strength"] * norm, rel=1e-4)
        assert sweep[1]["continuations"] == result["unsteered"]["continuations"]


# --------------------------------------------------------------------------- the files


def test_page_is_self_contained_and_shows_every_latent_by_stability(page: dict):
    out, result = page["out"], page["result"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".ssae-output.json", PAGE_FILE, SUMMARY_FILE, RESULT_FILE]
    )
    text, parser = parsed(out)
    assert "http://" not in text and "https://" not in text
    assert not {"script", "link", "img", "iframe", "object", "embed"} & set(parser.tags)
    assert all(link.startswith("#") for link in parser.links), parser.links
    order = [f"latent-{e['latent']}" for e in result["latents"]]
    assert parser.section_ids == order
    assert json.loads((out / RESULT_FILE).read_text())["latents"] == result["latents"]


def test_page_shows_the_top_pairs_and_the_continuations(page: dict, planted: dict):
    text, _ = parsed(page["out"])
    for entry in page["result"]["latents"]:
        for part in entry["top_pairs"].values():
            for pair in part:
                x, x_tilde = planted["texts"][pair["pair_id"]]
                assert {pair["from"], pair["to"]} == {x, x_tilde}
                shown = f"{html.escape(pair['from'])}</span>"
                assert shown in text and f"{html.escape(pair['to'])}</span>" in text
        for condition in entry["steering"]:
            for continuation in condition["continuations"]:
                assert html.escape(continuation) in text
        assert "strength -0.5" in text and "strength 1<" in text


def test_summary_has_one_row_per_latent(page: dict):
    lines = (page["out"] / SUMMARY_FILE).read_text().splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| latent")]
    assert [int(r.split("|")[1]) for r in rows] == [e["latent"] for e in page["result"]["latents"]]
    for row, entry in zip(rows, page["result"]["latents"], strict=True):
        assert entry["best_concept"]["concept"] in row
        first = entry["top_pairs"]["train"][0]
        assert f"{first['from']} → {first['to']}" in row


def test_without_texts_or_lm_pairs_are_shown_by_id(planted: dict, tmp_path: Path):
    result = inspect_files(
        planted["folder"] / "run",
        planted["folder"] / "emb.parquet",
        tmp_path / "bare",
        steer=False,
        config=FAST,
        progress=False,
    )
    assert result["unsteered"] is None and "steering" not in result["latents"][0]
    first = result["latents"][0]["top_pairs"]["train"][0]
    assert first["from"] is None
    text, _ = parsed(tmp_path / "bare")
    assert f"pair {first['pair_id']}" in text and "No language model was run" in text


# ---------------------------------------------------------------- readings, status, width


FORM_OF = {text: FORMS[f] for texts in ENTITIES for f, text in enumerate(texts)}


def one_way_pairs(planted: dict) -> EmbeddingTable:
    """The planted pairs, each pair of texts kept one way only (x -> x~ or x~ -> x at random),
    with half of them reversed by the table (as the study's sets are): the readings that raise a
    latent are then often backwards, relative to the texts and to the table."""
    table, texts = planted["table"], planted["texts"]
    first = {}
    for i in np.random.default_rng(0).permutation(len(table)):
        first.setdefault(frozenset(texts[int(table.pair_id[i])]), i)
    keep = np.isin(np.arange(len(table)), list(first.values()))
    return table.select(keep).reoriented(0.5, 0)


def reversed_inspection(planted: dict, status: str | None = None) -> dict:
    """The planted run inspected on :func:`one_way_pairs`, no LM; ``status``: plant that status
    in every member's record."""
    members = load_run(planted["folder"] / "run")
    if status is not None:
        for m in members:
            m.config = {**m.config, "record": {**m.config["record"], "status": status}}
    return inspection.inspect_run(
        members, one_way_pairs(planted), texts=planted["texts"], config=FAST, progress=False
    )


def reference_model(planted: dict, result: dict):
    members = load_run(planted["folder"] / "run")
    return members[result["run"]["seeds"].index(result["run"]["reference_seed"])]


def test_a_reversed_reading_shows_its_own_texts_code_and_change_and_is_marked(planted: dict):
    result = reversed_inspection(planted)
    table, model = planted["table"], reference_model(planted, result)
    assert one_way_pairs(planted).reversed_rows().any()
    text, markdown = render_html(result), render_markdown(result)
    mark = f' <span class="tag back">{html.escape(BACKWARDS)}</span>'
    backwards = 0
    for entry in result["latents"]:
        for pair in entry["top_pairs"]["train"] + entry["top_pairs"]["held_out"]:
            change = np.subtract(FORM_OF[pair["to"]], FORM_OF[pair["from"]])
            assert pair["changes"] == {
                c: float(v) for c, v in zip(CONCEPTS, change, strict=True) if v
            }
            x, x_tilde = planted["texts"][pair["pair_id"]]
            assert pair["reversed"] == ((pair["from"], pair["to"]) == (x_tilde, x))
            delta = table.delta[int(np.flatnonzero(table.pair_id == pair["pair_id"])[0])]
            delta = -delta if pair["reversed"] else delta
            codes = entry["orientation"] * model.encode(np.stack([delta, -delta]))
            assert [pair["code"], pair["other_way"]] == pytest.approx(
                codes[:, entry["latent"]], abs=1e-4
            )
            cell = (
                f'{html.escape(pair["from"])}</span><span class="arrow">&rarr;</span>'
                f'<span class="pair">{html.escape(pair["to"])}</span>'
            )
            # every table that shows this reading marks it, or none does
            assert text.count(cell + mark) == (text.count(cell) if pair["reversed"] else 0)
            backwards += pair["reversed"]
        first = entry["top_pairs"]["train"][0]
        row = next(r for r in markdown.splitlines() if r.startswith(f"| {entry['latent']} |"))
        assert (BACKWARDS in row.split(";")[0]) == first["reversed"]
    assert backwards > 0  # the reversed half of the table shows up


def test_no_pair_is_listed_twice_as_its_own_mirror(planted: dict):
    """The two codes of a pair sum to one number per latent (measured here), so no - table."""
    result = reversed_inspection(planted)
    for entry in result["latents"]:
        total = entry["two_way_sum"]
        codes = [p["code"] for part in entry["top_pairs"].values() for p in part]
        assert total["spread"] < 1e-4 * max(codes)
        for part in entry["top_pairs"].values():
            ids = [p["pair_id"] for p in part]
            assert len(ids) == len(set(ids))
            for p in part:
                assert p["code"] + p["other_way"] == pytest.approx(total["mean"], abs=1e-4)
    text = render_html(result)
    assert "most − code" not in text and "(&minus;)" not in text
    assert "read the other way, in the same order" in text  # the help box says why


def test_status_is_at_the_top_and_badges_are_grey_unless_every_member_is_usable(planted: dict):
    for status, ok in ((NOT_CONVERGED, False), (SLACK, False), (USABLE, True)):
        result = reversed_inspection(planted, status)
        text, markdown = render_html(result), render_markdown(result)
        top = text.split("</h1>", 1)[1].lstrip()
        box = f'<div class="box status {"ok" if ok else "warn"}">'
        assert top.startswith(f"{box}<b>Run status: {status} (3 of 3 members)")
        assert html.escape(STATUS_MEANINGS[status]) in top.split("</div>", 1)[0]
        colours = re.findall(r'class="tag (good|fair|poor)"', text)
        assert bool(colours) == ok
        assert (f"&middot; run {status}" in text) != ok  # a grey badge names the status
        assert markdown.splitlines()[2].startswith(f"**Run status: {status} (3 of 3 members)**")


def test_the_page_fits_1280_px(page: dict):
    text, _ = parsed(page["out"])
    for rule in (
        "max-width: 1280px",
        "box-sizing: border-box",
        ".scroll { max-width: 100%; overflow-x: auto; }",
        "table.fixed { table-layout: fixed; width: 100%; }",
        "overflow-wrap: anywhere",
        "minmax(min(420px, 100%), 1fr)",
    ):
        assert rule in text, rule
    assert text.count("<table") == text.count('<div class="scroll"><table') > 0
    assert "nowrap" not in text.split("</style>", 1)[1]


# --------------------------------------------------------------------------- the command


def test_ssae_inspect_embeds_a_pair_table_as_the_run_was(tiny_lm_dir: Path, tmp_path: Path):
    """embed -> train -> `ssae inspect` with the pair table (embedded again by inspect) and with
    the embeddings and their pair table; a pair table that is not theirs is refused."""
    table, texts = planted_pairs()
    pairs = pair_table(
        [x for x, _ in texts], [t for _, t in texts], list(table.split), table.shift, CONCEPTS
    )
    write_parquet(pairs, tmp_path / "pairs.parquet")
    other = pair_table(["the cat"], ["the dog"], ["train"], np.ones((1, 2)), CONCEPTS)
    write_parquet(other, tmp_path / "other.parquet")
    emb = extract_embeddings(
        tmp_path / "pairs.parquet", tmp_path / "emb", model=str(tiny_lm_dir), layer=1,
        device="cpu", progress=False,
    )  # fmt: skip
    cfg = TrainConfig(latent_dim=2, seeds=(0, 1), epochs=2, min_steps=0)
    train_run(emb, tmp_path / "run", cfg, require_active=False, progress=False)
    fast = "--prompts 1 --strengths=-0.6,0.6 --max-new-tokens 3 --device cpu --quiet"
    for step in (
        f"inspect run --pairs pairs.parquet --out page {fast}",
        f"inspect run --pairs emb --texts pairs.parquet --out page2 {fast}",
    ):
        done = ssae(step, cwd=tmp_path)
        assert done.returncode == 0, (step, done.stderr)
    assert "inspected 2 latents of seed" in done.stdout and "with steering" in done.stdout
    first = json.loads((tmp_path / "page" / RESULT_FILE).read_text())
    second = json.loads((tmp_path / "page2" / RESULT_FILE).read_text())
    assert first["data"]["layer"] == "1" and first["data"]["model"] == str(tiny_lm_dir)
    assert first["data"]["texts"] and second["data"]["texts"]
    for a, b in zip(first["latents"], second["latents"], strict=True):
        for part in ("train", "held_out"):
            ours, theirs = a["top_pairs"][part], b["top_pairs"][part]
            assert [(p["pair_id"], p["from"]) for p in ours] == [
                (p["pair_id"], p["from"]) for p in theirs
            ]  # the same embeddings (up to batching), the same texts
            assert [p["code"] for p in ours] == pytest.approx([p["code"] for p in theirs])
    wrong = ssae(f"inspect run --pairs emb --texts other.parquet --out page3 {fast}", cwd=tmp_path)
    assert wrong.returncode == 2 and wrong.stderr.startswith("error: --texts other.parquet")
    assert len(wrong.stderr.strip().splitlines()) == 1 and not (tmp_path / "page3").exists()
