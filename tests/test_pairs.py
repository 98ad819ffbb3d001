"""`ssae pairs`: a user's own file of text pairs (CSV, TSV, JSON Lines, Parquet, a Hugging Face
save_to_disk folder) becomes a pair table; splits keep groups whole; labels become per-text states
and, where both texts' states are known, concepts with shifts; bad input is one line, exit 2, and
nothing changes on disk."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ssae_core.datasets.custom import CustomPairsConfig, build_custom_pairs, custom_pair_configs
from ssae_core.errors import InputError
from ssae_core.io import PairLabels, decode_metadata, load_pairs, written_by
from tests.helpers import assert_one_line_error, snapshot, ssae, ssae_in_process

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "hf_save_to_disk"


def user_rows(threads: int = 12, per_thread: int = 3) -> list[dict[str, object]]:
    """Posts and replies: ``per_thread`` pairs per thread, languages changing in some of them,
    texts with commas, quotes, tabs-free newlines and leading zeros ('007' must stay text)."""
    languages = [("en", "fr"), ("en", "en"), ("fr", "de"), ("de", "en")]
    rows = []
    for t in range(threads):
        for k in range(per_thread):
            lx, lxt = languages[(t + k) % len(languages)]
            rows.append(
                {
                    "thread": f"t{t:02d}",
                    "post": f'post {t}-{k}, "quoted"\nsecond line' if k == 0 else f"post {t}-{k}",
                    "reply": f"007 reply {t}-{k}",
                    "lang_post": lx,
                    "lang_reply": lxt,
                    "topic": ["sport", "news"][t % 2],
                }
            )
    return rows


def write_rows(rows: list[dict[str, object]], path: Path) -> Path:
    """``rows`` in the format named by ``path``'s extension."""
    name = path.name
    if name.endswith((".csv", ".tsv", ".csv.gz")):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "wt", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(
                fh, fieldnames=list(rows[0]), delimiter="\t" if name.endswith(".tsv") else ","
            )
            writer.writeheader()
            writer.writerows(rows)
    elif name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        raise ValueError(name)
    return path


ARGS = "--x post --x-tilde reply --group thread --label language=lang_post:lang_reply"


def read_out(path: Path) -> pa.Table:
    table = load_pairs(path)  # the project's own validation
    assert written_by(path) == "pairs"
    return table


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet", ".csv.gz"])
def test_every_format_gives_the_same_pairs(tmp_path, suffix):
    rows = user_rows()
    source = write_rows(rows, tmp_path / f"posts{suffix}")
    done = ssae(f"pairs {source.name} {ARGS} --out pairs.parquet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote 36 pairs" in done.stdout
    table = read_out(tmp_path / "pairs.parquet")
    assert table.column("pair_id").to_pylist() == list(range(len(rows)))
    assert table.column("x").to_pylist() == [r["post"] for r in rows]
    assert table.column("x_tilde").to_pylist() == [r["reply"] for r in rows]
    # the split depends on the groups and the seed only, so every format splits alike
    reference = build_custom_pairs(
        CustomPairsConfig(
            str(write_rows(rows, tmp_path / "ref.parquet")), "post", "reply", group="thread",
            labels=("language=lang_post:lang_reply",),
        )
    ).table  # fmt: skip
    assert table.column("split").to_pylist() == reference.column("split").to_pylist()
    assert table.column("shift").to_pylist() == reference.column("shift").to_pylist()


def test_hf_save_to_disk_folders_read_as_datasets_reads_them():
    from ssae_core.datasets.custom import read_rows

    expected = json.loads((FIXTURE / "expected.json").read_text())
    for name in ("dataset", "sharded", "shuffled", "dict"):
        table, fmt = read_rows(FIXTURE / name)
        assert fmt == "hf"
        assert {c: table.column(c).to_pylist() for c in table.column_names} == expected[name]


def test_hf_dataset_dict_splits_and_class_labels(tmp_path):
    source = tmp_path / "edits"
    shutil.copytree(FIXTURE / "dict", source)
    done = ssae(
        "pairs edits --x before --x-tilde after --split split --group author --label kind "
        "--out pairs.parquet",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    table = read_out(tmp_path / "pairs.parquet")
    assert table.column("split").to_pylist() == ["train"] * 3 + ["test"] * 2
    labels = PairLabels.from_arrow(table, "pairs")
    assert labels.state_names == ["kind"]
    assert labels.x_states[:, 0].tolist() == ["tense", "formality", "tense", "formality", "tense"]
    assert (labels.x_states == labels.x_tilde_states).all()  # one value per pair
    assert "shift" not in table.column_names  # no per-text states: unlabelled concepts
    assert labels.group.tolist() == ["1", "2", "1", "3", "4"]


def build(tmp_path: Path, rows: list[dict], **options) -> pa.Table:
    source = write_rows(rows, tmp_path / "posts.parquet")
    return build_custom_pairs(CustomPairsConfig(str(source), "post", "reply", **options)).table


def test_group_split_keeps_groups_whole_is_seeded_and_order_free(tmp_path):
    rows = user_rows(threads=40)
    table = build(tmp_path, rows, group="thread")
    labels = PairLabels.from_arrow(table, "t")
    split = np.asarray(table.column("split").to_pylist())
    groups = labels.group
    assert set(groups[split == "train"]).isdisjoint(groups[split == "test"])
    assert len(set(groups[split == "test"])) == 10  # 25% of 40 threads
    assert groups.tolist() == [r["thread"] for r in rows]
    again = build(tmp_path, rows, group="thread")
    assert again.equals(table)
    other_seed = build(tmp_path, rows, group="thread", seed=1)
    assert other_seed.column("split").to_pylist() != split.tolist()
    # the same rows in another order: every thread lands on the same side
    order = np.random.default_rng(0).permutation(len(rows))
    shuffled = build(tmp_path, [rows[i] for i in order], group="thread")
    side = dict(zip(groups, split, strict=True))
    shuffled_groups = PairLabels.from_arrow(shuffled, "t").group
    assert [side[g] for g in shuffled_groups] == shuffled.column("split").to_pylist()


def test_no_group_splits_pairs_and_writes_no_labels(tmp_path):
    table = build(tmp_path, user_rows(threads=20))
    assert table.column("split").to_pylist().count("test") == 15  # 25% of 60 pairs
    assert "group" not in table.column_names and "shift" not in table.column_names
    concepts, _ = decode_metadata(table.schema)
    assert concepts is None


def test_user_split_is_kept_and_checked_against_groups(tmp_path, capsys):
    rows = user_rows(threads=6)
    for row in rows:
        row["part"] = "test" if row["thread"] in ("t01", "t04") else "train"
    table = build(tmp_path, rows, split="part", group="thread")
    assert table.column("split").to_pylist() == [r["part"] for r in rows]
    rows[0]["part"] = "test"  # thread t00 now on both sides
    write_rows(rows, tmp_path / "leak.csv")
    before = snapshot(tmp_path)
    code, _, err = ssae_in_process(
        capsys, "pairs", tmp_path / "leak.csv", "--x", "post", "--x-tilde", "reply",
        "--split", "part", "--group", "thread", "--out", tmp_path / "out.parquet",
    )  # fmt: skip
    assert_one_line_error(code, err, "group 't00' of column 'thread' is in both train and test")
    assert snapshot(tmp_path) == before
    # without --group the user's split is taken as it is
    assert build(tmp_path, rows, split="part").column("split").to_pylist()[0] == "test"


def test_per_text_labels_become_concepts_with_signed_shifts(tmp_path):
    rows = user_rows()
    table = build(tmp_path, rows, group="thread", labels=("language=lang_post:lang_reply", "topic"))
    labels = PairLabels.from_arrow(table, "t")
    assert labels.state_names == ["language", "topic"]
    assert labels.x_states[:, 0].tolist() == [r["lang_post"] for r in rows]
    assert labels.x_tilde_states[:, 0].tolist() == [r["lang_reply"] for r in rows]
    assert labels.x_states[:, 1].tolist() == labels.x_tilde_states[:, 1].tolist()
    concepts, _ = decode_metadata(table.schema)
    # changes seen: en->fr, fr->de, de->en; one concept per pair of values, a before b
    assert concepts == ["language:de->en", "language:de->fr", "language:en->fr"]
    assert labels.concept_states["language:de->fr"] == ["language", "de", "fr"]
    shift = np.asarray(table.column("shift").to_pylist())
    for row, values in zip(rows, shift, strict=True):
        change = (row["lang_post"], row["lang_reply"])
        expected = {
            ("en", "fr"): [0, 0, 1],
            ("fr", "de"): [0, -1, 0],
            ("de", "en"): [1, 0, 0],
            ("en", "en"): [0, 0, 0],
        }[change]
        assert values.tolist() == expected, change


def test_duplicates_and_identical_texts_are_dropped_and_counted(tmp_path, capsys):
    rows = user_rows(threads=4)
    rows.insert(3, dict(rows[1]))  # an exact repeat of row 1
    rows.append(dict(rows[0]))  # and of row 0
    rows.append({**rows[2], "reply": rows[2]["post"]})  # x == x_tilde
    source = write_rows(rows, tmp_path / "posts.jsonl")
    code, out, err = ssae_in_process(
        capsys, "pairs", source, "--x", "post", "--x-tilde", "reply", "--group", "thread",
        "--out", tmp_path / "pairs.parquet",
    )  # fmt: skip
    assert code == 0, err
    assert "dropped 2 duplicate pair(s) and 1 with identical texts" in out
    table = read_out(tmp_path / "pairs.parquet")
    assert table.num_rows == len(rows) - 3
    ids = table.column("pair_id").to_pylist()
    assert 3 not in ids and len(rows) - 2 not in ids and 1 in ids and 0 in ids
    meta = decode_metadata(table.schema)[1]
    assert (meta["duplicates_dropped"], meta["identical_dropped"]) == ("2", "1")
    # a second run replaces its own earlier output
    code, _, err = ssae_in_process(
        capsys, "pairs", source, "--x", "post", "--x-tilde", "reply",
        "--out", tmp_path / "pairs.parquet",
    )  # fmt: skip
    assert code == 0, err


def test_texts_are_compared_in_nfc_form(tmp_path):
    import unicodedata

    rows = user_rows(threads=4)
    nfc, nfd = "un café noir", unicodedata.normalize("NFD", "un café noir")
    assert nfc != nfd
    rows.append({**rows[0], "post": nfc, "reply": nfd})  # one text in two forms: identical
    rows.append({**rows[1], "post": nfd, "reply": "a black coffee"})
    table = build(tmp_path, rows, group="thread")
    texts = table.column("x").to_pylist() + table.column("x_tilde").to_pylist()
    assert nfd not in texts and nfc in texts  # stored as NFC
    assert table.num_rows == len(rows) - 1  # the NFC/NFD pair was dropped as identical


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_cell_larger_than_a_read_block_is_read(tmp_path, suffix):
    rows = user_rows(threads=4)
    rows[2]["reply"] = "long reply " * 300_000  # 3.3 MB in one cell
    source = write_rows(rows, tmp_path / f"posts{suffix}")
    table = build_custom_pairs(CustomPairsConfig(str(source), "post", "reply")).table
    assert max(len(t) for t in table.column("x_tilde").to_pylist()) == len(rows[2]["reply"])


def test_unlabelled_custom_pairs_embed_and_train(tmp_path, tiny_lm_dir):
    from ssae_core.lm.embed import extract_embeddings
    from ssae_core.runs import train_run
    from ssae_core.train import TrainConfig

    rows = [
        {"post": f"the {a} is {c}", "reply": f"the {b} is {c}", "thread": a}
        for a, b in (("king", "queen"), ("man", "woman"), ("boy", "girl"), ("actor", "actress"))
        for c in ("red", "blue", "green", "small", "big")
    ]
    pairs = tmp_path / "pairs.parquet"
    code = ssae(
        f"pairs {write_rows(rows, tmp_path / 'p.csv').name} --x post --x-tilde reply "
        f"--group thread --out {pairs.name}",
        cwd=tmp_path,
    )
    assert code.returncode == 0, code.stderr
    emb = extract_embeddings(pairs, tmp_path / "emb", model=str(tiny_lm_dir), progress=False)
    cfg = TrainConfig(latent_dim=2, seeds=(0,), epochs=1, min_steps=0, patience=0, batch_size=4)
    result = train_run(emb, tmp_path / "run", cfg, require_active=False, progress=False)
    assert result.models[0].record.num_train_shifts > 0


def test_params_section_loads_configs_and_rejects_bad_names():
    configs = custom_pair_configs(
        {"replies": {"path": "r.csv", "x": "post", "x_tilde": "reply", "labels": ["topic"]}},
        "params.yaml:pairs.custom",
    )
    assert configs["replies"].labels == ("topic",)
    with pytest.raises(InputError, match=r"pairs\.custom\.lang: give each set a new name"):
        custom_pair_configs({"lang": {"path": "a", "x": "a", "x_tilde": "b"}}, "pairs.custom")
    with pytest.raises(InputError, match=r"pairs\.custom\.r: unknown key\(s\) xtilde"):
        custom_pair_configs({"r": {"path": "a", "x": "a", "xtilde": "b"}}, "pairs.custom")


def test_help_documents_the_label_forms():
    done = ssae("pairs --help", cwd=Path.cwd())
    assert done.returncode == 0
    for text in ("NAME=COL_X:COL_X_TILDE", "NAME=COL, or COL", "--test-fraction", "save_to_disk"):
        assert text in done.stdout, text


# --------------------------------------------------------------------------- bad input


def _missing_column(folder: Path) -> str:
    write_rows(user_rows(), folder / "posts.csv")
    return "pairs posts.csv --x post --x-tilde answer --out out.parquet"


def _empty_text(folder: Path) -> str:
    rows = user_rows()
    rows[4]["reply"] = "   "
    write_rows(rows, folder / "posts.csv")
    return "pairs posts.csv --x post --x-tilde reply --out out.parquet"


def _group_on_both_sides(folder: Path) -> str:
    rows = user_rows()
    for k, row in enumerate(rows):
        row["part"] = "test" if k % 2 else "train"
    write_rows(rows, folder / "posts.parquet")
    return "pairs posts.parquet --x post --x-tilde reply --split part --group thread --out o.pq"


def _unreadable(folder: Path) -> str:
    (folder / "posts.parquet").write_bytes(b"PAR1 this is not parquet")
    return "pairs posts.parquet --x post --x-tilde reply --out out.parquet"


def _unknown_format(folder: Path) -> str:
    (folder / "posts.xlsx").write_bytes(b"PK\x03\x04")
    return "pairs posts.xlsx --x post --x-tilde reply --out out.parquet"


def _every_row_with(path: Path, **values: str) -> None:
    write_rows([{**row, **values} for row in user_rows()], path)


def _bad_split_values(folder: Path) -> str:
    _every_row_with(folder / "posts.jsonl", part="validation")
    return "pairs posts.jsonl --x post --x-tilde reply --split part --out out.parquet"


def _bad_label(folder: Path) -> str:
    write_rows(user_rows(), folder / "posts.csv")
    return "pairs posts.csv --x post --x-tilde reply --label language=lang_post: --out o.parquet"


def _one_group(folder: Path) -> str:
    _every_row_with(folder / "posts.csv", thread="same")
    return "pairs posts.csv --x post --x-tilde reply --group thread --out out.parquet"


def _foreign_output(folder: Path) -> str:
    write_rows(user_rows(), folder / "posts.csv")
    (folder / "out.parquet").write_text("my own file\n")
    return "pairs posts.csv --x post --x-tilde reply --out out.parquet"


def _missing_file(folder: Path) -> str:
    return "pairs nowhere.csv --x post --x-tilde reply --out out.parquet"


BAD_INPUT = {
    "missing-column": (_missing_column, "no column 'answer' (columns present: thread, post, reply"),
    "empty-text": (_empty_text, "column 'reply' has 1 empty text(s) (data row 5)"),
    "group-both-sides": (_group_on_both_sides, "is in both train and test"),
    "unreadable": (_unreadable, "posts.parquet: not a readable parquet file"),
    "unknown-format": (_unknown_format, "posts.xlsx: unknown format (.xlsx)"),
    "split-values": (_bad_split_values, "its values must be train or test"),
    "label-syntax": (_bad_label, "is not a label; write NAME=COL_X:COL_X_TILDE"),
    "one-group": (_one_group, "1 distinct groups in column 'thread'"),
    "foreign-output": (_foreign_output, "exists and was not written by `ssae pairs`"),
    "missing-file": (_missing_file, "nowhere.csv: no such file or folder"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(tmp_path, case):
    make, message = BAD_INPUT[case]
    command = make(tmp_path)
    before = snapshot(tmp_path)
    done = ssae(command, cwd=tmp_path)
    assert_one_line_error(done.returncode, done.stderr, message)
    assert snapshot(tmp_path) == before


def test_spreadsheet_csv_with_byte_order_mark_and_crlf(tmp_path):
    source = tmp_path / "export.csv"
    source.write_bytes(
        b'\xef\xbb\xbfpost,reply\r\nhello,bonjour\r\nbye,"au\r\nrevoir"\r\nNA,007\r\n'
    )
    table = build_custom_pairs(CustomPairsConfig(str(source), "post", "reply")).table
    assert table.column("x").to_pylist() == ["hello", "bye", "NA"]
    assert table.column("x_tilde").to_pylist() == ["bonjour", "au\r\nrevoir", "007"]
