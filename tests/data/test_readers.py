"""Corpus readers: exact tables on clean fixtures, every bad-input kind located and counted,
and the real LC-Rec corpora (skipped when ../shared/data is absent)."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest

from ttds.data import schema
from ttds.data.readers import read_amazon, read_corpus, read_lcrec, read_recbole
from ttds.data.readers._common import InteractionBuilder, clean_text, iter_json_object, parse_record
from ttds.data.readers.recbole import Header
from ttds.data.rejects import DataError, RejectLog

try:
    from conftest import shared_dataset
except ImportError:  # run outside the tests/ rootdir
    shared_dataset = None


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_gz(path: Path, text: str) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(text)
    return path


def jsonl(*records: object) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def rows(table) -> list[dict]:
    return table.to_pylist()


def found(rejects: RejectLog, kind: str) -> list[tuple[str, int, str]]:
    """(file name, line, action) of each reject of `kind`."""
    return [(Path(r.file).name, r.line, r.action) for r in rejects.entries if r.kind == kind]


def check_schemas(corpus) -> None:
    assert corpus.interactions.schema == schema.RAW_INTERACTIONS
    assert corpus.items.schema == schema.RAW_ITEMS
    assert corpus.users.schema == schema.RAW_USERS


# ---------------------------------------------------------------- shared helpers


def test_clean_text_strips_tags_and_joins_lists():
    assert clean_text("<b>Great</b>&amp; <br/>cheap\n\n tuner") == "Great & cheap tuner"
    assert clean_text(["a <i>b</i>", "", "  c "], ", ") == "a b, c"
    assert clean_text([["Instruments", "Guitars"], ["Amps"]], ",") == "Instruments,Guitars,Amps"
    assert clean_text(None) == "" and clean_text(3.5) == "3.5"
    # not markup: comparisons and "<>" bullets in product text survive
    assert clean_text("for < 1.5mm and > 3mm <> zero") == "for < 1.5mm and > 3mm <> zero"


def test_parse_record_json_then_python_literal():
    assert parse_record('{"asin": "A1", "overall": 5.0}') == {"asin": "A1", "overall": 5.0}
    assert parse_record("{'asin': 'A1', 'helpful': [0, 0], 'verified': True}") == {"asin": "A1", "helpful": [0, 0], "verified": True}
    assert parse_record("{'asin': __import__('os')}") is None  # literals only, never code
    assert parse_record("{not json") is None
    assert parse_record("[1, 2]") is None  # every record format is an object


def test_iter_json_object_gives_key_lines_and_keeps_repeats(tmp_path):
    p = write(tmp_path / "x.json", '{\n  "a": [1,\n 2],\n  "b": {"c": 1},\n  "a": []\n}\n')
    assert list(iter_json_object(p)) == [("a", [1, 2], 2), ("b", {"c": 1}, 4), ("a", [], 5)]
    assert list(iter_json_object(write(tmp_path / "e.json", " {} "))) == []
    for bad in ("[1, 2]", '{"a": [1,]}', '{"a": 1} x', '{"a" 1}', ""):
        with pytest.raises(DataError, match="not a JSON object file"):
            list(iter_json_object(write(tmp_path / "bad.json", bad)))


def test_builder_keeps_earliest_duplicate_and_flags_time_order_once():
    log = RejectLog()
    b = InteractionBuilder("f.jsonl", log)
    b.add("u", "i1", 50, 1)
    b.add("u", "i2", 10, 2)  # before line 1 in time, but line 1 ends up dropped
    b.add("u", "i1", 20, 3)  # same pair as line 1, earlier: line 1 is the duplicate
    b.add("u", "i3", 5, 4)  # kept events of u step back here (20 -> 5): reported
    b.add("v", "i1", 1, 5)
    b.add("u", "i4", 2, 6)  # u steps back again: not reported a second time
    t = b.finish()
    assert rows(t.select(["user_key", "item_key", "timestamp"])) == [
        {"user_key": "u", "item_key": "i2", "timestamp": 10},
        {"user_key": "u", "item_key": "i1", "timestamp": 20},
        {"user_key": "u", "item_key": "i3", "timestamp": 5},
        {"user_key": "v", "item_key": "i1", "timestamp": 1},
        {"user_key": "u", "item_key": "i4", "timestamp": 2},
    ]
    assert found(log, "duplicate_interaction") == [("f.jsonl", 1, "dropped")]
    assert "line 3" in log.entries[0].reason
    assert found(log, "non_monotonic_timestamp") == [("f.jsonl", 4, "repaired")]
    assert b.finish() is t and len(log.entries) == 2  # idempotent, no double reporting
    assert b.users() == ["u", "v"] and b.items() == ["i2", "i1", "i3", "i4"]


# ---------------------------------------------------------------- LC-Rec


def lcrec_clean(folder: Path) -> Path:
    folder.mkdir()
    write(folder / "T.inter.json", json.dumps({"u1": [0, 1, 2], "u2": [2, 0]}, indent=4))
    items = {
        "0": {"title": "Tuner <b>Pro</b>", "description": ["Clip-on.", "Bright &amp; clear"], "brand": "Acme", "categories": ["Music", "Tuners"]},
        "1": {"title": "Strings", "description": "Steel", "brand": "", "categories": "Music,Strings"},
        "2": {"title": "Capo"},  # missing text fields are empty, not rejects
        "3": {"title": "Never bought", "description": "", "brand": "", "categories": ""},
    }
    write(folder / "T.item.json", json.dumps(items))
    write(folder / "T.index.json", json.dumps({"0": ["<a_1>", "<b_2>"], "1": ["<a_1>", "<b_3>"], "2": ["<a_2>", "<b_2>"]}))
    write(folder / "T.item2id", "B00A\t0\nB00B\t1\nB00C\t2\nB00D\t3\n")
    write(folder / "T.user2id", "AU1\t0\nAU2\t1\n")
    return folder


def test_lcrec_clean_exact_tables(tmp_path):
    c = read_lcrec(lcrec_clean(tmp_path / "T"))
    check_schemas(c)
    assert (c.source, c.name) == ("lcrec", "T")
    assert rows(c.interactions) == [
        {"user_key": "u1", "item_key": "0", "timestamp": 0, "rating": None, "review": ""},
        {"user_key": "u1", "item_key": "1", "timestamp": 1, "rating": None, "review": ""},
        {"user_key": "u1", "item_key": "2", "timestamp": 2, "rating": None, "review": ""},
        {"user_key": "u2", "item_key": "2", "timestamp": 0, "rating": None, "review": ""},
        {"user_key": "u2", "item_key": "0", "timestamp": 1, "rating": None, "review": ""},
    ]
    assert rows(c.items) == [
        {"item_key": "0", "title": "Tuner Pro", "description": "Clip-on., Bright & clear", "brand": "Acme", "categories": "Music,Tuners"},
        {"item_key": "1", "title": "Strings", "description": "Steel", "brand": "", "categories": "Music,Strings"},
        {"item_key": "2", "title": "Capo", "description": "", "brand": "", "categories": ""},
        {"item_key": "3", "title": "Never bought", "description": "", "brand": "", "categories": ""},
    ]
    assert rows(c.users) == [{"user_key": "u1", "text": ""}, {"user_key": "u2", "text": ""}]
    assert c.precomputed_index == {"0": ["<a_1>", "<b_2>"], "1": ["<a_1>", "<b_3>"], "2": ["<a_2>", "<b_2>"]}
    assert c.rejects.entries == [] and c.rejects.seen == 5 + 4 + 3 + 4 + 2
    assert sorted(p.name for p in c.inputs) == ["T.index.json", "T.inter.json", "T.item.json", "T.item2id", "T.user2id"]
    # the inter file itself and read_corpus both work as entry points
    assert read_lcrec(tmp_path / "T" / "T.inter.json").interactions == c.interactions
    assert read_corpus("lcrec", tmp_path / "T").interactions == c.interactions


def test_lcrec_without_item_file_lists_items_from_interactions(tmp_path):
    folder = tmp_path / "N"
    folder.mkdir()
    write(folder / "N.inter.json", '{"a": [10, 2], "b": [2, 7]}')
    c = read_lcrec(folder)
    assert c.items["item_key"].to_pylist() == ["2", "7", "10"]
    assert set(c.items["title"].to_pylist()) == {""}
    assert c.precomputed_index is None


def test_lcrec_bad_input_located_and_counted(tmp_path):
    folder = tmp_path / "B"
    folder.mkdir()
    inter = write(
        folder / "B.inter.json",
        "{\n"
        '"u1": [0, 1],\n'  # line 2: good
        '"u2": [],\n'  # line 3: empty_sequence
        '"u3": [0, "x", 1.5, true, 1],\n'  # line 4: three wrong_type, 0 and 1 kept
        '"u4": [0, 9],\n'  # line 5: 9 has no item entry -> unknown_id
        '"u5": [1, 0, 1],\n'  # line 6: duplicate_interaction
        '"u6": "0 1",\n'  # line 7: not a list -> wrong_type
        '"u1": [2]\n'  # line 8: u1 again, position 0 after 1 -> non_monotonic_timestamp
        "}\n",
    )
    write(folder / "B.item.json", '{"0": {"title": "a"},\n"1": {"title": "b"},\n"2": {"title": "c"},\n"x": {"title": "d"},\n"3": "plain"}')
    write(folder / "B.index.json", '{"0": ["<a_1>"],\n"1": 5}')
    write(folder / "B.item2id", "B0\t0\nB1\tone\nB2\n")
    c = read_lcrec(folder)
    check_schemas(c)
    log = c.rejects
    assert found(log, "empty_sequence") == [("B.inter.json", 3, "dropped")]
    assert found(log, "wrong_type") == [
        ("B.item.json", 4, "dropped"),
        ("B.item.json", 5, "dropped"),
        ("B.index.json", 2, "dropped"),
        ("B.item2id", 2, "dropped"),
        ("B.inter.json", 4, "dropped"),
        ("B.inter.json", 4, "dropped"),
        ("B.inter.json", 4, "dropped"),
        ("B.inter.json", 7, "dropped"),
    ]
    assert found(log, "missing_field") == [("B.item2id", 3, "dropped")]
    assert found(log, "unknown_id") == [("B.inter.json", 5, "dropped")]
    assert found(log, "duplicate_interaction") == [("B.inter.json", 6, "dropped")]
    assert found(log, "non_monotonic_timestamp") == [("B.inter.json", 8, "repaired")]
    assert log.counts() == {"empty_sequence": 1, "wrong_type": 8, "missing_field": 1, "unknown_id": 1, "duplicate_interaction": 1, "non_monotonic_timestamp": 1}
    assert all(r.file == str(inter) for r in log.entries if Path(r.file).name == "B.inter.json")
    assert "'x'" in next(r.reason for r in log.entries if r.line == 4 and r.file == str(inter))
    # good records kept, in file order
    assert [(r["user_key"], r["item_key"], r["timestamp"]) for r in rows(c.interactions)] == [
        ("u1", "0", 0), ("u1", "1", 1), ("u3", "0", 0), ("u3", "1", 4), ("u4", "0", 0),
        ("u5", "1", 0), ("u5", "0", 1), ("u1", "2", 0),
    ]
    assert c.precomputed_index == {"0": ["<a_1>"]}
    # seen: item.json 5 + index 2 + item2id 3 + inter events (2+1+5+2+3+1+1)
    assert log.seen == 5 + 2 + 3 + 15


def test_lcrec_unreadable_files_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_lcrec(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no \\*.inter.json"):
        read_lcrec(empty)
    write(empty / "A.inter.json", "this is not json")
    with pytest.raises(DataError, match="A.inter.json:1: not a JSON object file"):
        read_lcrec(empty)
    write(empty / "B.inter.json", "{}")
    with pytest.raises(DataError, match="several datasets"):
        read_lcrec(empty)
    with pytest.raises(DataError, match="no usable interactions"):
        read_lcrec(empty, name="B")
    write(empty / "C.inter.json", '{"u": [], "v": []}')
    with pytest.raises(DataError, match="empty_sequence: 2"):  # the summary says why
        read_lcrec(empty, name="C")


# ---------------------------------------------------------------- Amazon 2018


META = [
    {"asin": "I1", "title": "Tuner <span>Pro</span>", "description": ["Clip-on.", "<p>Bright</p>"], "brand": "Acme", "category": ["Musical Instruments", "Tuners"]},
    {"asin": "I2", "title": "Strings", "description": "Steel &amp; nickel", "brand": "", "category": []},
]
REVIEWS = [
    {"reviewerID": "U1", "asin": "I1", "unixReviewTime": 100, "overall": 5.0, "summary": "Great", "reviewText": "Works <br/>well"},
    {"reviewerID": "U2", "asin": "I1", "unixReviewTime": 150, "overall": 3.0, "summary": "Ok!", "reviewText": "Fine"},
    {"reviewerID": "U1", "asin": "I2", "unixReviewTime": 200, "overall": 4.0, "reviewText": "Solid"},
]


def test_amazon_clean_gzipped_exact_tables(tmp_path):
    reviews = write_gz(tmp_path / "Musical_Instruments.json.gz", jsonl(*REVIEWS))
    meta = write_gz(tmp_path / "meta_Musical_Instruments.json.gz", jsonl(*META))
    c = read_amazon(reviews, meta)
    check_schemas(c)
    assert (c.source, c.name) == ("amazon", "Musical_Instruments")
    assert rows(c.interactions) == [
        {"user_key": "U1", "item_key": "I1", "timestamp": 100, "rating": 5.0, "review": "Great. Works well"},
        {"user_key": "U2", "item_key": "I1", "timestamp": 150, "rating": 3.0, "review": "Ok! Fine"},
        {"user_key": "U1", "item_key": "I2", "timestamp": 200, "rating": 4.0, "review": "Solid"},
    ]
    assert rows(c.items) == [
        {"item_key": "I1", "title": "Tuner Pro", "description": "Clip-on., Bright", "brand": "Acme", "categories": "Musical Instruments,Tuners"},
        {"item_key": "I2", "title": "Strings", "description": "Steel & nickel", "brand": "", "categories": ""},
    ]
    assert rows(c.users) == [{"user_key": "U1", "text": ""}, {"user_key": "U2", "text": ""}]
    assert c.rejects.entries == [] and c.rejects.seen == 5
    assert c.inputs == [reviews, meta]
    assert read_corpus("amazon", reviews, meta=meta).interactions == c.interactions


def test_amazon_plain_json_python_literals_and_no_meta(tmp_path):
    old = "{'reviewerID': 'U9', 'asin': 'I7', 'unixReviewTime': 300, 'overall': 2.0, 'helpful': [0, 1], 'summary': \"Don't\", 'reviewText': 'Broke'}"
    reviews = write(tmp_path / "Old.json", jsonl(REVIEWS[0], old))
    c = read_amazon(reviews)
    assert c.rejects.entries == []
    assert rows(c.interactions)[1] == {"user_key": "U9", "item_key": "I7", "timestamp": 300, "rating": 2.0, "review": "Don't. Broke"}
    assert rows(c.items) == [{"item_key": k, "title": "", "description": "", "brand": "", "categories": ""} for k in ("I1", "I7")]


def test_amazon_bad_input_located_and_counted(tmp_path):
    good = dict(REVIEWS[0])
    lines = [
        good,  # 1 kept
        '{"reviewerID": "U2", "asin": ',  # 2 malformed_json
        {"reviewerID": "U2", "unixReviewTime": 5},  # 3 missing_field (asin)
        {"reviewerID": "U2", "asin": "I1", "unixReviewTime": "abc"},  # 4 wrong_type
        {"reviewerID": "U2", "asin": "NOMETA", "unixReviewTime": 5},  # 5 unknown_id
        dict(good, unixReviewTime=300),  # 6 duplicate of line 1 (later): dropped
        {"reviewerID": "U1", "asin": "I2", "unixReviewTime": 50},  # 7 back in time: repaired
        {"reviewerID": "U3", "asin": "I2", "unixReviewTime": 60, "overall": "five"},  # 8 wrong_type, kept
        "",  # 9 blank: skipped, not counted
        "{'reviewerID': 'U3', 'asin': 'I1', 'unixReviewTime': 70}",  # 10 literal: kept
        {"reviewerID": ["U4"], "asin": "I1", "unixReviewTime": 70},  # 11 wrong_type (id is a list)
        {"reviewerID": "", "asin": "I1", "unixReviewTime": 70},  # 12 missing_field (empty)
        {"reviewerID": "U5", "asin": "I1", "unixReviewTime": 10**30},  # 13 wrong_type (no int64)
    ]
    reviews = write_gz(tmp_path / "Cat.json.gz", jsonl(*lines))
    meta = write_gz(
        tmp_path / "meta_Cat.json.gz",
        jsonl(META[0], "{broken", {"title": "no asin"}, META[1], dict(META[0], title="second copy")),
    )
    c = read_amazon(reviews, meta)
    check_schemas(c)
    log = c.rejects
    assert found(log, "malformed_json") == [("meta_Cat.json.gz", 2, "dropped"), ("Cat.json.gz", 2, "dropped")]
    assert found(log, "missing_field") == [("meta_Cat.json.gz", 3, "dropped"), ("Cat.json.gz", 3, "dropped"), ("Cat.json.gz", 12, "dropped")]
    assert found(log, "wrong_type") == [("Cat.json.gz", 4, "dropped"), ("Cat.json.gz", 8, "repaired"), ("Cat.json.gz", 11, "dropped"), ("Cat.json.gz", 13, "dropped")]
    assert found(log, "unknown_id") == [("Cat.json.gz", 5, "dropped")]
    assert found(log, "duplicate_interaction") == [("Cat.json.gz", 6, "dropped")]
    assert found(log, "non_monotonic_timestamp") == [("Cat.json.gz", 7, "repaired")]
    assert log.seen == 5 + 12
    assert log.dropped == 10
    assert '"unixReviewTime": "abc"' in next(r.record for r in log.entries if r.line == 4)
    assert [(r["user_key"], r["item_key"], r["timestamp"], r["rating"]) for r in rows(c.interactions)] == [
        ("U1", "I1", 100, 5.0), ("U1", "I2", 50, None), ("U3", "I2", 60, None), ("U3", "I1", 70, None),
    ]
    assert c.items["title"].to_pylist() == ["Tuner Pro", "Strings"]  # first copy of I1 kept


def test_amazon_unreadable_files_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="reviews file not found"):
        read_amazon(tmp_path / "none.json.gz")
    reviews = write_gz(tmp_path / "R.json.gz", jsonl(*REVIEWS) * 50)
    with pytest.raises(DataError, match="metadata file not found"):
        read_amazon(reviews, tmp_path / "meta_none.json.gz")
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(reviews.read_bytes()[:-30])
    with pytest.raises(DataError, match="cannot read"):
        read_amazon(cut)
    with pytest.raises(DataError, match="malformed_json: 2"):
        read_amazon(write(tmp_path / "junk.json", "nope\nalso nope\n"))


# ---------------------------------------------------------------- RecBole


INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
ITEM = "item_id:token\ttitle:token_seq\tcategories:token_seq\tbrand:token\tdescription:token_seq\tprice:float\n"


def recbole_clean(folder: Path) -> Path:
    folder.mkdir()
    write(folder / "ml.inter", INTER + "1\t10\t4.0\t978300760.0\n2\t10\t3\t978300761.9\n1\t20\t5.0\t978300800\n")
    write(folder / "ml.item", ITEM + "10\tToy Story\tAnimation Comedy\tPixar\tA <i>toy</i> story\t9.5\n20\tHeat\tAction\t\t\t\n30\tUnrated\t\t\t\t\n")
    write(folder / "ml.user", "user_id:token\tage:token\tgender:token\tweight:float\tbio:token_seq\n1\t25\tF\t60.5\tlikes films\n3\t40\tM\t80\t\n")
    return folder


def test_recbole_header_parsing():
    h = Header.parse("user_id:token\titem_id:token\trating:float\ttimestamp:float\tnote")
    assert h.names == ("user_id", "item_id", "rating", "timestamp", "note")
    assert h.types == ("token", "token", "float", "float", None)


def test_recbole_clean_exact_tables(tmp_path):
    c = read_recbole(recbole_clean(tmp_path / "ml"), "ml")
    check_schemas(c)
    assert (c.source, c.name) == ("recbole", "ml")
    assert rows(c.interactions) == [
        {"user_key": "1", "item_key": "10", "timestamp": 978300760, "rating": 4.0, "review": ""},
        {"user_key": "2", "item_key": "10", "timestamp": 978300761, "rating": 3.0, "review": ""},
        {"user_key": "1", "item_key": "20", "timestamp": 978300800, "rating": 5.0, "review": ""},
    ]
    assert rows(c.items) == [
        {"item_key": "10", "title": "Toy Story", "description": "A toy story", "brand": "Pixar", "categories": "Animation Comedy"},
        {"item_key": "20", "title": "Heat", "description": "", "brand": "", "categories": "Action"},
        {"item_key": "30", "title": "Unrated", "description": "", "brand": "", "categories": ""},
    ]
    # .user rows first (text from token columns, floats left out), then users seen only in .inter
    assert rows(c.users) == [
        {"user_key": "1", "text": "age: 25; gender: F; bio: likes films"},
        {"user_key": "3", "text": "age: 40; gender: M"},
        {"user_key": "2", "text": ""},
    ]
    assert c.rejects.entries == [] and c.rejects.seen == 3 + 3 + 2
    assert read_corpus("recbole", tmp_path / "ml").interactions == c.interactions  # name inferred


def test_recbole_without_timestamp_or_item_file_uses_file_order(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    write(folder / "r.inter", "item_id:token\tuser_id:token\nb\tu\na\tu\nb\tv\n")
    c = read_recbole(folder / "r.inter")
    assert [(r["user_key"], r["item_key"], r["timestamp"], r["rating"]) for r in rows(c.interactions)] == [
        ("u", "b", 0, None), ("u", "a", 1, None), ("v", "b", 0, None),
    ]
    assert c.items["item_key"].to_pylist() == ["b", "a"]


def test_recbole_bad_input_located_and_counted(tmp_path):
    folder = tmp_path / "b"
    folder.mkdir()
    write(
        folder / "b.inter",
        INTER
        + "1\t10\t4\t100\n"  # 2 kept
        + "1\t20\t4\n"  # 3 missing_field: no timestamp column value
        + "1\t\t4\t100\n"  # 4 missing_field: empty item
        + "2\t10\t4\tyesterday\n"  # 5 wrong_type timestamp
        + "2\t99\t4\t100\n"  # 6 unknown_id
        + "1\t10\t5\t300\n"  # 7 duplicate (later)
        + "1\t20\tfive\t50\n"  # 8 unknown_id: checked before the bad rating
        + "2\t10\t1\t7\textra\n",  # 9 wrong_type: too many fields
    )
    write(folder / "b.item", ITEM + "10\tA\t\t\t\t1\n\tB\t\t\t\t1\n20\tC\n")  # line 3 empty id, line 4 short
    c = read_recbole(folder, "b")
    check_schemas(c)
    log = c.rejects
    assert found(log, "missing_field") == [("b.item", 3, "dropped"), ("b.item", 4, "dropped"), ("b.inter", 3, "dropped"), ("b.inter", 4, "dropped")]
    assert found(log, "wrong_type") == [("b.inter", 5, "dropped"), ("b.inter", 9, "dropped")]
    # item 20's .item row was short, so 20 is unknown too
    assert found(log, "unknown_id") == [("b.inter", 6, "dropped"), ("b.inter", 8, "dropped")]
    assert found(log, "duplicate_interaction") == [("b.inter", 7, "dropped")]
    assert found(log, "non_monotonic_timestamp") == []
    assert log.seen == 3 + 8
    assert [(r["user_key"], r["item_key"], r["timestamp"]) for r in rows(c.interactions)] == [("1", "10", 100)]


def test_recbole_time_order_and_repaired_rating(tmp_path):
    folder = tmp_path / "t"
    folder.mkdir()
    write(folder / "t.inter", INTER + "1\t10\t4\t100\n1\t20\tfive\t50\n1\t30\t\t40\n")
    c = read_recbole(folder)
    assert found(c.rejects, "wrong_type") == [("t.inter", 3, "repaired")]
    assert found(c.rejects, "non_monotonic_timestamp") == [("t.inter", 3, "repaired")]
    assert c.interactions["rating"].to_pylist() == [4.0, None, None]


@pytest.mark.parametrize(
    "header",
    ["user:token\titem_id:token\n", "user_id:token\titemid:token\n", "1\t10\t4.0\t100\n"],
)
def test_recbole_bad_header_raises_data_error(tmp_path, header):
    folder = tmp_path / "h"
    folder.mkdir()
    write(folder / "h.inter", header + "1\t10\n")
    with pytest.raises(DataError, match=r"h.inter:1: bad_header: the header has no (user_id|item_id)"):
        read_recbole(folder)


def test_recbole_bad_item_header_and_empty_file(tmp_path):
    folder = tmp_path / "h"
    folder.mkdir()
    write(folder / "h.inter", INTER + "1\t10\t4\t100\n")
    write(folder / "h.item", "id:token\ttitle:token_seq\n10\tA\n")
    with pytest.raises(DataError, match="h.item:1: bad_header: the header has no item_id"):
        read_recbole(folder)
    write(folder / "h.item", "")
    with pytest.raises(DataError, match="h.item: bad_header: the file is empty"):
        read_recbole(folder)


def test_read_corpus_unknown_source():
    with pytest.raises(DataError, match="unknown corpus source 'csv'"):
        read_corpus("csv", ".")


# ---------------------------------------------------------------- real LC-Rec corpora


def real(name: str) -> Path:
    if shared_dataset is not None:
        return shared_dataset(name)
    path = Path(__file__).resolve().parents[3] / "shared" / "data" / name
    if not path.exists():
        pytest.skip(f"../shared/data/{name} not present")
    return path


@pytest.mark.real_data
def test_real_instruments(tmp_path):
    start = time.perf_counter()
    c = read_lcrec(real("Instruments"))
    elapsed = time.perf_counter() - start
    check_schemas(c)
    assert c.name == "Instruments"
    assert c.interactions.num_rows == 206_153
    assert c.users.num_rows == 24_772 and len(set(c.interactions["user_key"].to_pylist())) == 24_772
    assert c.items.num_rows == 9_922 and len(set(c.interactions["item_key"].to_pylist())) == 9_922
    assert c.rejects.entries == [], c.rejects.summary()
    assert len(c.precomputed_index) == 9_922 and c.precomputed_index["0"] == ["<a_137>", "<b_112>", "<c_79>", "<d_200>"]
    first = rows(c.interactions.slice(0, 19))
    assert [r["item_key"] for r in first] == [str(i) for i in range(19)] and [r["timestamp"] for r in first] == list(range(19))
    assert elapsed < 10, f"reading Instruments took {elapsed:.1f} s"


@pytest.mark.real_data
def test_real_scientific():
    c = read_lcrec(real("Scientific"))
    check_schemas(c)
    assert (c.interactions.num_rows, c.users.num_rows, c.items.num_rows) == (58_492, 8_317, 4_344)
    assert c.rejects.entries == [], c.rejects.summary()
    titles = c.items["title"].to_pylist()
    assert all(titles)
    assert titles[0].startswith("SUPCO SPP6 Relay/Capacitor Hard Start Kit")
    assert c.items["categories"].to_pylist()[0] == "Industrial & Scientific,Industrial Electrical,Passive Components,Capacitors"
    assert sum(1 for d in c.items["description"].to_pylist() if d) == 4_221
