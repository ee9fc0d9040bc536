"""The command line: happy paths on BM25 (no model) and one-line errors on bad input."""

import json
import math

import pytest
from click.testing import CliRunner

from ragroute.cli import main
from ragroute.errors import RagrouteError
from ragroute.index.build import build_index
from ragroute.index.io import save_index
from ragroute.store.artifact import published_path
from ragroute.store.manifest import MANIFEST_NAME


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "comets.md").write_text("# Comets\n\nComets have an ion tail pushed by the solar wind.\n")
    (folder / "bread.md").write_text("# Bread\n\nSourdough needs a long fermentation of flour and water.\n")
    (folder / "printers.csv").write_text("model,toner\nP350,QT-350\nP200,QT-200\n")
    return folder


def beir(tmp_path, corpus_lines):
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_bytes(b"\n".join(corpus_lines) + b"\n")
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "solar wind tail"}) + "\n")
    (folder / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return folder


def test_build_query_json_and_trace(runner, corpus, tmp_path):
    out = tmp_path / "idx"
    result = runner.invoke(main, ["build", str(corpus), "--out", str(out), "--method", "bm25"])
    assert result.exit_code == 0, result.output
    assert "built bm25 index of 3 units" in result.output
    result = runner.invoke(main, ["query", str(out), "solar wind", "-k", "2", "--json"])
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["hits"][0]["doc_id"] == "comets" and payload["hits"][0]["source"] == "idx"
    assert [step["stage"] for step in payload["trace"]] == ["load", "retrieve"]
    result = runner.invoke(main, ["query", str(out), "toner", "--filter", "modality=table"])
    assert "printers" in result.output and "trace:" in result.output
    assert "score: the BM25 (Okapi) score" in result.output  # what the number is (session 39)


def test_query_filter_matches_typed_metadata_and_refuses_an_absent_key(runner, tmp_path):
    """A command-line VALUE is text; JSON metadata holds numbers and booleans: year=2019 must keep
    documents whose year is the number 2019 (and the string "2019"), and a key no document has is
    refused in one line (error:, exit 2) rather than returning nothing silently."""
    rows = [
        {"_id": "a", "text": "revenue grew", "year": 2019, "audited": True},
        {"_id": "b", "text": "revenue fell", "year": 2018, "audited": False},
        {"_id": "c", "text": "revenue flat", "year": "2019", "audited": "true"},
        {"_id": "d", "text": "revenue up", "year": 20190, "audited": 1},
        {"_id": "e", "text": "costs rose", "year": 2019},
        {"_id": "f", "text": "weather mild", "year": 2016},
    ]
    data = tmp_path / "meta.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "idx"
    assert runner.invoke(main, ["build", str(data), "--out", str(out), "--method", "bm25"]).exit_code == 0

    def ids(*options):
        result = runner.invoke(main, ["query", str(out), "revenue", "--json", *options])
        assert result.exit_code == 0, result.output
        return sorted(h["doc_id"] for h in json.loads(result.stdout.strip().splitlines()[-1])["hits"])

    assert ids("--filter", "year=2019") == ["a", "c"]
    assert ids("--filter", "audited=true") == ["a", "c"]  # the integer 1 is not the boolean true
    assert ids("--filter", "year=2018", "--filter", "year=2017") == ["b"]
    rows = [
        {"_id": "p", "text": "revenue pen", "price": 12.5, "rating": 4, "tags": ["office", "ink"]},
        {"_id": "q", "text": "revenue pen", "price": "12.5", "rating": 4.0, "tags": ["ink"]},
        {"_id": "r", "text": "revenue pen", "price": 12, "rating": 3.5, "tags": "office", "score": math.nan},
    ]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert runner.invoke(main, ["build", str(data), "--out", str(out), "--method", "bm25"]).exit_code == 0
    assert ids("--filter", "price=12.5") == ["p", "q"]  # the float matched only as text
    assert ids("--filter", "rating=4.0") == ["p", "q"] and ids("--filter", "rating=3.5") == ["r"]
    assert ids("--filter", "tags=office") == ["p", "r"]  # a list value matches any of its items
    # null keeps a missing (or null) key, as a filter value None does: it matched the text "null" only
    assert ids("--filter", "score=null") == ["p", "q"]
    # a NaN read from the data is written as null: --json stays strict JSON
    result = runner.invoke(main, ["query", str(out), "pen", "--json", "--filter", "price=12"])
    line = result.stdout.strip().splitlines()[-1]
    assert "NaN" not in line and json.loads(line)["hits"][0]["metadata"]["score"] is None
    # an empty value matches the empty text, and says so (an unset shell variable reads the same)
    result = runner.invoke(main, ["query", str(out), "revenue", "--json", "--filter", "tags="])
    assert result.exit_code == 0 and json.loads(result.stdout.strip().splitlines()[-1])["hits"] == []
    assert "note: --filter tags= matches documents whose tags is the empty text" in result.stderr
    result = runner.invoke(main, ["query", str(out), "revenue", "--filter", "yaer=2019"])
    assert result.exit_code == 2 and result.stdout == ""  # refused, not zero hits and a warning
    assert result.stderr.strip() == (
        "error: filters: no document has metadata key 'yaer' (keys: price, rating, score, tags)"
    )


def test_eval_json_keys(runner, tmp_path):
    data = beir(
        tmp_path,
        [
            json.dumps({"_id": f"d{i}", "title": "", "text": t}).encode()
            for i, t in enumerate(["rain", "solar wind tail", "bread"])
        ],
    )
    out = tmp_path / "idx"
    assert runner.invoke(main, ["build", str(data), "--out", str(out), "--method", "bm25"]).exit_code == 0
    result = runner.invoke(
        main, ["eval", "--index", str(out), "--data", str(data), "--split", "dev", "--json"]
    )
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"ndcg@10", "recall@10", "recall@100", "mrr@10", "queries"} <= payload.keys()
    assert payload["ndcg@10"] == 1.0 and payload["queries"] == 1
    # fewer hits than Recall@100 reads would be scored as if they were all: refused
    shallow = runner.invoke(main, ["eval", "--index", str(out), "--data", str(data), "--depth", "50"])
    assert shallow.exit_code == 2 and "50 is not in the range x>=100" in shallow.output  # as --help says
    # a split judging nothing printed every metric as 0.0 over 0 queries, exit 0 (until session 37)
    (data / "qrels" / "empty.tsv").write_text("query-id\tcorpus-id\tscore\n")
    empty = runner.invoke(
        main, ["eval", "--index", str(out), "--data", str(data), "--split", "empty", "--json"]
    )
    assert (
        empty.exit_code == 2
        and "split 'empty' judges no query of queries.jsonl: nothing to score" in empty.output
    )


def eval_data(tmp_path, corpus_lines, query_lines, qrels):
    """A BEIR folder and a bm25 index built from its good lines (the data is broken afterwards)."""
    good = [
        json.dumps({"_id": f"d{i}", "text": t}).encode()
        for i, t in enumerate(["rain", "comet tail", "bread"])
    ]
    data = beir(tmp_path, good)
    out = tmp_path / "idx"
    assert (
        CliRunner().invoke(main, ["build", str(data), "--out", str(out), "--method", "bm25"]).exit_code == 0
    )
    (data / "corpus.jsonl").write_bytes(b"\n".join(good + corpus_lines) + b"\n")
    (data / "queries.jsonl").write_bytes(b"\n".join(query_lines) + b"\n")
    (data / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return data, out


QUERIES = [b'{"_id": "q1", "text": "comet tail"}', b'{"_id": "q2", "text": "bread"}']


def test_eval_says_how_many_records_it_skipped_and_how_many_queries_it_scores(runner, tmp_path):
    data, out = eval_data(
        tmp_path,
        [b'{"_id": "d9", "text": broken'],
        [*QUERIES, b'{"_id": "q3"}'],
        "q1\td1\t1\nq2\td2\t1\nq3\td2\t1\n",
    )
    result = runner.invoke(main, ["eval", "--index", str(out), "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["queries"] == 2
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert any("skipped 1 bad line in" in w and "corpus.jsonl" in w for w in warnings)
    assert any(
        "skipped 1 bad line in" in w and "queries.jsonl (line 3; line 3: missing 'text')" in w
        for w in warnings
    )
    assert any("1 judged query id not in queries.jsonl (e.g. 'q3')" in w for w in warnings)
    summary = [w for w in warnings if "the metrics cover" in w]
    assert summary == [
        f"warning: 2 bad records of {data} skipped: the metrics cover 2 of 3 judged queries "
        "(--strict refuses such data)"
    ]
    assert len(warnings) == 4  # each problem said once, then the one summary


def test_eval_summary_counts_only_the_queries_that_can_be_scored(runner, tmp_path):
    """A query judged only with grade 0 is not scored (the first stdout line says so): the summary of
    skipped records counted it among the queries the metrics cover, "cover 3 of 4 judged queries"
    where 1 of 2 was scored (until session 50)."""
    data, out = eval_data(
        tmp_path,
        [],
        [*QUERIES, b'{"_id": "q3"}', b'{"_id": "q4", "text": "rain"}'],
        "q1\td1\t1\nq2\td2\t0\nq3\td2\t1\nq4\td0\t0\n",
    )
    result = runner.invoke(main, ["eval", "--index", str(out), "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["queries"] == 1
    summary = [line for line in result.stderr.splitlines() if "the metrics cover" in line]
    assert summary == [
        f"warning: 1 bad record of {data} skipped: the metrics cover 1 of the 2 queries judged relevant "
        "to a document (--strict refuses such data)"
    ]


def test_eval_on_clean_data_or_only_dangling_qrels_adds_no_summary_line(runner, tmp_path):
    data, out = eval_data(tmp_path, [], QUERIES, "q1\td1\t1\nq2\td2\t1\n")
    clean = runner.invoke(main, ["eval", "--index", str(out), "--data", str(data)])
    assert clean.exit_code == 0 and "warning" not in clean.stderr, clean.output
    (data / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq7\td2\t1\n")
    dangling = runner.invoke(main, ["eval", "--index", str(out), "--data", str(data)])
    assert dangling.exit_code == 0
    assert dangling.stderr.strip() == (  # the loader's warning already says it
        f"warning: {data / 'qrels' / 'dev.tsv'}: 1 judged query id not in queries.jsonl (e.g. 'q7')"
    )


@pytest.mark.parametrize(
    ("corpus_lines", "query_lines", "qrels", "message"),
    [
        ([b'{"_id": "d9", "text": broken'], QUERIES, "q1\td1\t1\n", "corpus.jsonl line 4: invalid JSON"),
        ([], [*QUERIES, b'{"_id": "q3"}'], "q1\td1\t1\n", "queries.jsonl line 3: missing 'text'"),
        ([], QUERIES, "q1\td1\t1\nq7\td1\t1\n", "1 judged query id not in queries.jsonl (e.g. 'q7')"),
        ([], QUERIES, "q1\td8\t1\n", "1 judged doc id not in the corpus (e.g. 'd8')"),
        ([], QUERIES, "", "no judged pairs (split 'dev' is empty)"),
        (  # q2 keeps a query to score once the last line left q1 judged only with grade 0
            [],
            QUERIES,
            "q1\td1\t1\nq1\td1\t0\nq2\td2\t1\n",
            "1 (query-id, corpus-id) pair judged on more than one line",
        ),
    ],
    ids=[
        "broken-json",
        "query-without-text",
        "dangling-query",
        "dangling-doc",
        "empty-split",
        "judged-twice",
    ],
)
def test_eval_strict_refuses_bad_data_in_one_line(
    runner, tmp_path, corpus_lines, query_lines, qrels, message
):
    data, out = eval_data(tmp_path, corpus_lines, query_lines, qrels)
    result = runner.invoke(main, ["eval", "--index", str(out), "--data", str(data), "--strict"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    lenient = runner.invoke(main, ["eval", "--index", str(out), "--data", str(data)])
    if qrels:
        assert lenient.exit_code == 0, lenient.output  # the default still scores what it could read
    else:  # nothing to read: every metric 0.0 over 0 queries, exit 0, until session 37
        assert (
            lenient.exit_code == 2 and "judges no query of queries.jsonl: nothing to score" in lenient.output
        )


def test_eval_counts_only_the_queries_it_scores_and_refuses_a_split_with_none_relevant(runner, tmp_path):
    """A query judged only with grade 0 (or below) is not scored (no nDCG): until session 42 `eval`
    still counted it in "queries", and a split judging no document relevant printed every metric
    as 0.0, exit 0."""
    data, out = eval_data(tmp_path, [], QUERIES, "q1\td1\t1\nq2\td2\t0\n")
    result = runner.invoke(main, ["eval", "--index", str(out), "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["queries"] == 1 and payload["ndcg@10"] == 1.0
    text = runner.invoke(main, ["eval", "--index", str(out), "--data", str(data)])
    assert "1 query (1 judged with no relevant document, not scored)" in text.stdout
    (data / "qrels" / "dev.tsv").write_text("q1\td1\t0\nq2\td2\t-1\n")
    for flags in ([], ["--json"], ["--strict"]):
        none = runner.invoke(main, ["eval", "--index", str(out), "--data", str(data), *flags])
        assert none.exit_code == 2 and none.stdout == "", none.output
        assert none.stderr.strip() == (
            f"error: {data}: split 'dev' judges no query of queries.jsonl relevant to a document "
            "(every score is 0 or below): nothing to score"
        )


def test_eval_says_which_pairs_the_qrels_judge_twice_and_which_score_counts(runner, tmp_path):
    # q1 d1 judged 1, then 0: the last line wins, and nDCG is no longer what either line alone gives
    qrels = "q1\td1\t1\nq2\td2\t1\nq1\td1\t0\nq1\td0\t1\nq2\td2\t2\nq2\td2\t2\n"
    data, out = eval_data(tmp_path, [], QUERIES, qrels)
    result = runner.invoke(main, ["eval", "--index", str(out), "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == (
        f"warning: {data / 'qrels' / 'dev.tsv'}: 2 (query-id, corpus-id) pairs judged on more than one line "
        "(q1 d1: 1 then 0, q2 d2: 1 then 2 then 2): the last line's score is kept"
    )
    assert json.loads(result.stdout.strip().splitlines()[-1])["queries"] == 2


def test_eval_strict_scores_clean_data_as_the_default_does(runner, tmp_path):
    data, out = eval_data(tmp_path, [], QUERIES, "q1\td1\t1\nq2\td2\t1\n")
    runs = [
        runner.invoke(main, ["eval", "--index", str(out), "--data", str(data), *flag, "--json"])
        for flag in ([], ["--strict"])
    ]
    assert [r.exit_code for r in runs] == [0, 0]
    default, strict = (json.loads(r.stdout.strip().splitlines()[-1]) for r in runs)
    assert default.pop("queries_per_s") and strict.pop("queries_per_s")
    assert strict == default and strict["queries"] == 2


def test_bad_corpus_lines_skip_with_count_or_fail_with_line(runner, tmp_path):
    lines = [
        b'{"_id": "d1", "text": "fine"}',
        b'{"_id": "d2", "text": broken',
        b'{"_id": "d3", "text": "caf\xff"}',
        b'{"_id": "d4", "text": "also fine"}',
    ]
    data = beir(tmp_path, lines)
    result = runner.invoke(main, ["build", str(data), "--out", str(tmp_path / "i"), "--method", "bm25"])
    assert result.exit_code == 0
    assert "warning: skipped 2 bad lines" in result.output and "(2 bad records skipped)" in result.output
    result = runner.invoke(
        main, ["build", str(data), "--out", str(tmp_path / "j"), "--method", "bm25", "--on-error", "raise"]
    )
    assert result.exit_code == 2
    assert (
        result.output.strip() == "error: corpus.jsonl line 2: invalid JSON (Expecting value at column 20)"
        or (
            result.output.startswith("error: ")
            and "line 2" in result.output
            and len(result.output.splitlines()) == 1
        )
    )
    assert not (tmp_path / "j").exists()


def test_build_says_which_records_it_drops_for_having_no_text(runner, tmp_path):
    """A JSONL record with "text": "" vanished (9 documents -> 8 units) and an empty .txt of a folder
    gave "loaded 0 documents", neither with a word of why (a user audit)."""
    rows = [{"id": "T1", "text": "printer jams"}, {"id": "T2", "text": ""}, {"id": "T3", "text": "vpn"}]
    data = tmp_path / "tickets.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    result = runner.invoke(main, ["build", str(data), "--out", str(tmp_path / "i"), "--method", "bm25"])
    assert result.exit_code == 0, result.output
    assert "warning: dropped 1 document with no text to index: T2" in result.output
    assert "-> 2 document units (1 with no text dropped)" in result.output
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nSome text.\n")
    (folder / "todo.txt").write_text("")
    result = runner.invoke(main, ["build", str(folder), "--out", str(tmp_path / "j"), "--method", "bm25"])
    assert result.exit_code == 0, result.output
    assert f"warning: skipped 1 empty file in {folder} (todo.txt)" in result.output
    assert f"loaded 1 document from {folder} (left out: 1 empty file)" in result.output


def test_build_of_a_folder_counts_the_files_it_does_not_read(runner, corpus, tmp_path):
    """`ragroute build mixed` said `loaded 2 documents` of a folder holding tickets.jsonl too, and
    no warning (a user audit)."""
    (corpus / "tickets.jsonl").write_text('{"id": "T1", "text": "printer jams"}\n')
    (corpus / "page.html").write_text("<p>hello</p>")
    result = runner.invoke(main, ["build", str(corpus), "--out", str(tmp_path / "i"), "--method", "bm25"])
    assert result.exit_code == 0, result.output
    assert (
        f"warning: {corpus}: 2 files not read (1 .html: page.html; 1 .jsonl: tickets.jsonl)" in result.output
    )
    assert (
        f"loaded 3 documents from {corpus} (left out: 2 not read files) -> 3 document units" in result.output
    )


def test_build_names_the_columns_of_a_table_whose_text_column_is_not_text(runner, tmp_path):
    """``ragroute build products.csv`` stopped at ``no text column 'text'`` with no way on the command
    line to name another (a user audit): the column options of the loader are build options."""
    data = tmp_path / "products.csv"
    data.write_text("sku,name,body,price\nP1,Quillo,Laser printer uses toner QT-350.,199\n", "utf-8")
    out = tmp_path / "idx"
    result = runner.invoke(main, ["build", str(data), "--out", str(out), "--method", "bm25"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "no text column 'text' (available columns: sku, name, body, price)" in result.output
    assert "--text-column on the command line" in result.output
    columns = ["--text-column", "body", "--id-column", "sku", "--title-column", "name"]
    result = runner.invoke(main, ["build", str(data), "--out", str(out), "--method", "bm25", *columns])
    assert result.exit_code == 0, result.output
    hit = json.loads(runner.invoke(main, ["query", str(out), "toner", "--json"]).stdout.splitlines()[-1])
    assert hit["hits"][0]["doc_id"] == "P1" and hit["hits"][0]["title"] == "Quillo"
    assert hit["hits"][0]["metadata"] == {"price": "199"}
    args = ["build", str(data), "--out", str(out), "--method", "bm25", "--text-column", "body"]
    runner.invoke(main, [*args, "--metadata-columns", ""])
    hit = json.loads(runner.invoke(main, ["query", str(out), "toner", "--json"]).stdout.splitlines()[-1])
    assert hit["hits"][0]["metadata"] == {}
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nSome text.\n")
    result = runner.invoke(main, ["build", str(folder), "--out", str(out), "--method", "bm25", *columns[:2]])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: --text-column does not apply to {folder}, a folder corpus")


def test_a_title_column_is_the_title_by_default_as_an_id_column_is_the_id(runner, tmp_path):
    """A .jsonl row's `id` was its id but its `title` went into the metadata unless --title-column
    named it (a user walkthrough): a column named `title` is now the title, as `id` is the id, the
    build says which columns it read, and --title-column still names another."""
    rows = [
        {
            "id": "k1",
            "title": "Toner swap",
            "text": "Open the front cover.",
            "team": "it",
            "alt": "Cartridge",
        },
        {"id": "k2", "title": "Expenses", "text": "Claim within thirty days.", "team": "hr", "alt": "Claims"},
        {"id": "k3", "title": "Leave", "text": "Book leave early.", "team": "hr", "alt": "Holidays"},
    ]
    data = tmp_path / "kb.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    out = tmp_path / "idx"

    def first_hit(*options):
        result = runner.invoke(main, ["build", str(data), "--out", str(out), "--method", "bm25", *options])
        assert result.exit_code == 0, result.output
        hits = json.loads(runner.invoke(main, ["query", str(out), "cover", "--json"]).stdout.splitlines()[-1])
        return result.stderr, hits["hits"][0]

    said, hit = first_hit()
    assert "(columns: text 'text', id 'id', title 'title')" in said
    assert hit["doc_id"] == "k1" and hit["title"] == "Toner swap"
    assert hit["metadata"] == {"team": "it", "alt": "Cartridge"}
    said, hit = first_hit("--title-column", "alt")
    assert "(columns: text 'text', id 'id', title 'alt')" in said
    assert hit["title"] == "Cartridge" and hit["metadata"] == {"team": "it", "title": "Toner swap"}
    csv_data = tmp_path / "kb.csv"  # a CSV header the same way
    csv_data.write_text(
        "id,title,text\nk1,Toner swap,Open the front cover.\nk2,Leave,Book early.\nk3,Pay,Paid monthly.\n",
        "utf-8",
    )
    assert runner.invoke(main, ["build", str(csv_data), "--out", str(out), "--method", "bm25"]).exit_code == 0
    hits = json.loads(runner.invoke(main, ["query", str(out), "cover", "--json"]).stdout.splitlines()[-1])
    assert hits["hits"][0]["title"] == "Toner swap" and hits["hits"][0]["metadata"] == {}


def test_a_folder_of_one_latin1_file_says_how_to_fix_it(runner, tmp_path):
    """A folder holding only a cp1252 .txt said `invalid UTF-8 ...` then `error: no documents to
    index`, with no hint, and a skipped file was counted as "1 bad records" (a user walkthrough)."""
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "menu.txt").write_bytes("Café crème recipes\n".encode("cp1252"))
    result = runner.invoke(main, ["build", str(folder), "--out", str(tmp_path / "i"), "--method", "bm25"])
    assert result.exit_code == 2 and result.stdout == ""
    hint = "invalid UTF-8 on line 1 (byte 0xe9); re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8"
    assert result.stderr.splitlines()[-1] == (
        f"error: no documents to index: nothing in {folder} could be read (1 bad file skipped; menu.txt: "
        f"{hint} FILE > NEW))"
    )
    (folder / "plain.txt").write_text("Plain text.\n", "utf-8")
    result = runner.invoke(main, ["build", str(folder), "--out", str(tmp_path / "i"), "--method", "bm25"])
    assert result.exit_code == 0, result.output
    assert hint in result.stderr
    assert f"loaded 1 document from {folder} (1 bad file skipped) -> 1 document unit\n" in result.stderr
    assert "built bm25 index of 1 unit in" in result.stdout


def test_every_command_that_loads_a_corpus_takes_the_column_options(runner):
    for command in (["build"], ["graph", "build"], ["graph", "add"], ["expert", "train"]):
        help_text = runner.invoke(main, [*command, "--help"]).output
        for flag in ("--text-column", "--id-column", "--title-column", "--metadata-columns"):
            assert flag in help_text, (command, flag)


@pytest.mark.parametrize("query", ["", "   \t"])
def test_empty_query_is_one_line_error(runner, corpus, tmp_path, query):
    out = tmp_path / "idx"
    runner.invoke(main, ["build", str(corpus), "--out", str(out), "--method", "bm25"])
    result = runner.invoke(main, ["query", str(out), query])
    assert result.exit_code == 2
    assert result.output == "error: query is empty or whitespace only\n"


@pytest.mark.parametrize("name", ["", "   ", "\u200b"])
@pytest.mark.parametrize("command", [["build", "--method", "bm25"], ["graph", "build"]])
def test_a_name_that_names_nothing_is_refused_in_one_line(runner, corpus, tmp_path, command, name):
    """Until session 50 `build --name ""` stamped the output folder's name on the hits, unsaid."""
    out = tmp_path / "idx"
    result = runner.invoke(main, [*command, str(corpus), "--out", str(out), "--name", name])
    assert result.exit_code == 2 and result.stdout == "", result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: Invalid value for '--name': ") and "names nothing" in line, line
    assert not out.exists()
    if command[0] == "build":  # a --config file's empty name is refused alike
        defaults = tmp_path / "defaults.yaml"
        defaults.write_text(f"build:\n  name: '{name}'\n")
        again = runner.invoke(main, ["--config", str(defaults), *command, str(corpus), "--out", str(out)])
        assert again.exit_code == 2 and "names nothing" in again.stderr and not out.exists(), again.output


def test_rerank_refuses_a_negative_draw_and_empty_texts_before_any_work(runner, tmp_path, monkeypatch):
    """Until session 50 `rerank train --draw -1` was taken (its --seed refused -1) and `rerank
    score MODEL QUERY ""` scored the empty text."""
    import ragroute.cli.rerank

    def no_pairs(*_args, **_kwargs):
        raise AssertionError("training pairs were mined for a draw that cannot be trained")

    monkeypatch.setattr(ragroute.cli.rerank, "_pairs", no_pairs)
    out = tmp_path / "r"
    train = ["rerank", "train", "--data", str(tmp_path), "--out", str(out)]
    result = runner.invoke(main, [*train, "--draw", "-1"])
    assert result.exit_code == 2 and not out.exists()
    (line,) = result.output.splitlines()
    assert line.startswith("error: Invalid value for '--draw': -1 is not in the range x>=0."), line
    model = tmp_path / "no-such-model"  # refused before the model is looked for
    for texts, said in (
        (["comets", "ion tails", ""], "TEXT 2 is empty or whitespace only"),
        (["comets", "ion tails", " \t"], "TEXT 2 is empty or whitespace only"),
        (["comets", "\u200b"], "TEXT 1 has no visible characters"),
        (["  ", "ion tails"], "query is empty or whitespace only"),
    ):
        result = runner.invoke(main, ["rerank", "score", str(model), *texts])
        assert result.exit_code == 2 and result.stdout == "", result.output
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"error: {said}"), line


def test_expert_train_refuses_a_lora_rank_for_a_full_fine_tune(runner, corpus, tmp_path):
    """--rank is the query-lora adapter's: until session 55 `--mode full --rank 4` trained as if it
    were not given (and recorded rank 4 in the expert's manifest)."""
    out = tmp_path / "expert"
    result = runner.invoke(
        main, ["expert", "train", str(corpus), "--out", str(out), "--mode", "full", "--rank", "4"]
    )
    assert result.exit_code == 2 and result.stdout == "" and not out.exists(), result.output
    assert result.stderr == (
        "error: --rank does not apply to --mode full (it is the rank of the query-lora adapter)\n"
    )


def test_truncated_manifest_and_missing_index(runner, corpus, tmp_path):
    out = tmp_path / "idx"
    runner.invoke(main, ["build", str(corpus), "--out", str(out), "--method", "bm25"])
    manifest = published_path(out) / MANIFEST_NAME
    manifest.write_text(manifest.read_text()[:40])
    result = runner.invoke(main, ["query", str(out), "comets"])
    assert result.exit_code == 2 and "manifest.json is corrupt" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(main, ["query", str(tmp_path / "nope"), "comets"])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_missing_model_path_is_one_line_error(runner, corpus, tmp_path):
    result = runner.invoke(
        main,
        [
            "build",
            str(corpus),
            "--out",
            str(tmp_path / "idx"),
            "--method",
            "dense",
            "--encoder",
            str(tmp_path / "no-such-model"),
        ],
    )
    assert result.exit_code == 2
    assert result.output.startswith("error: encoder") and "not found" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "idx").exists()


def test_query_with_another_encoder_is_refused(runner, tmp_path, hashing_encoder, small_docs):
    save_index(build_index(small_docs, "dense", encoder=hashing_encoder), tmp_path / "idx")
    result = runner.invoke(
        main,
        [
            "query",
            str(tmp_path / "idx"),
            "galaxy",
            "--encoder",
            "all-MiniLM-L6-v2",
            "--backend",
            "torch",
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
    )
    assert result.exit_code == 2
    assert "was built with encoder 'test/hashing' (dim 64)" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_query_says_the_encoder_an_index_was_built_with_is_missing(runner, tmp_path, small_docs):
    """Without --encoder a query loads the model the index records; when its folder has moved, the
    error says it is the index's encoder and how to name it: until session 56 it read "encoder
    '/.../model' not found: no such local folder", as if the user had typed that name."""
    from conftest import HashingEncoder

    moved = tmp_path / "models" / "mine"
    save_index(
        build_index(small_docs, "dense", encoder=HashingEncoder(model_id=str(moved))), tmp_path / "idx"
    )
    data = tmp_path / "beir"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text('{"_id": "d1", "text": "a galaxy"}\n')
    (data / "queries.jsonl").write_text('{"_id": "q1", "text": "galaxy"}\n')
    (data / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    evaluate = ["eval", "--index", str(tmp_path / "idx"), "--data", str(data)]
    for command in (["query", str(tmp_path / "idx"), "galaxy"], evaluate):
        result = runner.invoke(main, [*command, "--cache-dir", str(tmp_path / "c")])
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
        assert result.output.startswith(f"error: {tmp_path / 'idx'} was built with encoder '{moved}'")
        assert "not found: no such local folder" in result.output and "pass --encoder" in result.output


def test_query_with_a_copy_of_the_models_folder_is_the_same_encoder(runner, tmp_path, minilm, small_docs):
    """`--encoder` naming a byte-identical copy of the model an index was built with (another path,
    so another model id) is that encoder, as `load_index` in Python takes it (same weights digest):
    the command line's check before loading compared the ids alone and refused it ("was built with
    encoder 'sentence-transformers/all-MiniLM-L6-v2' (dim 384), not '/.../copy'")."""
    import shutil

    from ragroute.encode import resolve_model

    save_index(build_index(small_docs, "dense", encoder=minilm), tmp_path / "idx")
    copy = tmp_path / "copy"
    shutil.copytree(resolve_model("all-MiniLM-L6-v2").path, copy)
    command = ["query", str(tmp_path / "idx"), "galaxy", "--backend", "torch", "--json"]
    result = runner.invoke(main, [*command, "--encoder", str(copy), "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    expected = runner.invoke(main, [*command, "--cache-dir", str(tmp_path / "c")])
    assert json.loads(result.output)["hits"] == json.loads(expected.output)["hits"]


def test_config_file_supplies_defaults(runner, corpus, tmp_path):
    config = tmp_path / "ragroute.yaml"
    config.write_text("build:\n  method: bm25\nquery:\n  k: 1\n")
    out = tmp_path / "idx"
    assert (
        runner.invoke(main, ["--config", str(config), "build", str(corpus), "--out", str(out)]).exit_code == 0
    )
    result = runner.invoke(main, ["--config", str(config), "query", str(out), "solar wind comets", "--json"])
    assert len(json.loads(result.stdout.strip().splitlines()[-1])["hits"]) == 1


def test_config_check_reads_a_defaults_file_of_gate_alone_as_cli_defaults(runner, tmp_path):
    """`gate` is a command and a routing config key: a defaults file holding only `gate:` sections
    was checked as a routing config until session 55 (2 problems, exit 1), though --config read it."""
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text("gate:\n  decide:\n    retrieval_rate: 0.7\n")
    result = runner.invoke(main, ["config", "check", str(defaults), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.splitlines()[-1])
    assert (report["what"], report["ok"]) == ("CLI defaults", True)
    defaults.write_text("gate:\n  decide:\n    retrieval_rate: 2\n")  # its values are checked as such
    result = runner.invoke(main, ["config", "check", str(defaults)])
    assert result.exit_code == 1 and "gate: decide: retrieval_rate: 2" in result.stderr, result.output
    routing = tmp_path / "routing.yaml"  # a routing config's gate: is still one
    routing.write_text("gate:\n  kind: threshold\n")
    report = json.loads(runner.invoke(main, ["config", "check", str(routing), "--json"]).stdout)
    assert report["what"] != "CLI defaults"


def test_every_command_has_help(runner):
    for args in (
        ["--help"],
        ["build", "--help"],
        ["query", "--help"],
        ["eval", "--help"],
        ["demo", "--help"],
        ["route", "--help"],
        ["bench", "--help"],
        ["bench", "bm25", "--help"],
        ["bench", "corpus-routing", "--help"],
    ):
        result = runner.invoke(main, args)
        assert result.exit_code == 0 and "Usage:" in result.output, args


def test_eval_warns_when_the_index_holds_no_judged_document(runner, corpus, tmp_path):
    data = beir(tmp_path, [json.dumps({"_id": "d1", "title": "", "text": "solar wind tail"}).encode()])
    other = tmp_path / "other"
    assert runner.invoke(main, ["build", str(corpus), "--out", str(other), "--method", "bm25"]).exit_code == 0
    result = runner.invoke(main, ["eval", "--index", str(other), "--data", str(data), "--split", "dev"])
    assert result.exit_code == 0
    assert f"warning: {other} holds none of the 1 document judged relevant in {data}" in result.stderr
    own = tmp_path / "own"
    assert runner.invoke(main, ["build", str(data), "--out", str(own), "--method", "bm25"]).exit_code == 0
    result = runner.invoke(main, ["eval", "--index", str(own), "--data", str(data), "--split", "dev"])
    assert result.exit_code == 0 and "warning" not in result.stderr
    # a routing config whose sources hold none of them: said too (silent zeros until session 36)
    for name, index in (("wrong", other), ("right", own)):
        config = tmp_path / f"{name}.yaml"
        config.write_text(f"sources:\n  only: {{index: {index}}}\nrouter: {{kind: centroid}}\n")
        result = runner.invoke(main, ["eval", "--config", str(config), "--data", str(data), "--split", "dev"])
        assert result.exit_code == 0, result.output
        said = f"warning: {config} holds none of the 1 document judged relevant in {data}" in result.stderr
        assert said == (name == "wrong")


def test_eval_config_takes_a_typed_backend_auto_over_the_configs(runner, tmp_path, monkeypatch):
    """`eval --config R --backend auto` ran the config's `backend:` until session 55 (a typed auto
    read as not given); not given, the config's backend still applies."""
    import ragroute.route.config

    data = beir(tmp_path, [json.dumps({"_id": "d1", "title": "", "text": "solar wind tail"}).encode()])
    config = tmp_path / "routing.yaml"
    config.write_text("backend: torch\nsources:\n  only: {index: idx}\nrouter: {kind: centroid}\n")
    asked = []

    def load_routing(path, *, backend=None, cache_dir=None):
        asked.append(backend)
        raise RagrouteError("stopped here")

    monkeypatch.setattr(ragroute.route.config, "load_routing", load_routing)
    command = ["eval", "--config", str(config), "--data", str(data), "--split", "dev"]
    for backend in (["--backend", "auto"], [], ["--backend", "onnx"]):
        result = runner.invoke(main, [*command, *backend])
        assert result.exit_code == 2 and result.stderr == "error: stopped here\n", result.output
    assert asked == ["auto", None, "onnx"]
    said = " ".join(runner.invoke(main, ["eval", "--help"]).output.split())  # and the help says so
    assert "[default: auto; with --config, the config's backend:, else auto]" in said
    assert "[default: with --config, the config's cache_dir:, else $RAGROUTE_CACHE" in said


def test_query_trace_names_terms_bm25_weighs_nothing(runner, tmp_path):
    """rank-bm25's idf is 0 for a term in exactly half of the documents (only negative idf is
    floored): a query of such terms finds nothing, and the trace says why."""
    data = tmp_path / "four.jsonl"
    texts = ["refund policy", "refund window", "shipping times", "store hours"]
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "idx"
    assert runner.invoke(main, ["build", str(data), "--out", str(out), "--method", "bm25"]).exit_code == 0
    result = runner.invoke(main, ["query", str(out), "refund", "--json"])
    retrieve = json.loads(result.stdout.strip().splitlines()[-1])["trace"][1]
    assert retrieve["hits"] == 0 and retrieve["weightless_terms"] == ["refund"]
    assert "warning: no hits: refund weigh nothing in this index" in result.stderr  # not only in the trace
    result = runner.invoke(main, ["query", str(out), "shipping", "--json"])
    retrieve = json.loads(result.stdout.strip().splitlines()[-1])["trace"][1]
    assert retrieve["hits"] == 1 and "weightless_terms" not in retrieve
    for nothing in ("the of and", "???"):  # no term at all: no hits, said as plainly
        result = runner.invoke(main, ["query", str(out), nothing])
        assert result.exit_code == 0 and "warning: no hits: the query has no term BM25 reads" in result.stderr


def test_usage_errors_are_one_line(runner, corpus, tmp_path):
    cases = {
        ("query", str(tmp_path), "x", "-k", "0"): "error: Invalid value for '-k': 0 is not in the range "
        "x>=1. (see 'ragroute query --help')",
        ("build", str(corpus), "--out", str(tmp_path / "i"), "--method", "foo"): "error: Invalid value "
        "for '--method': 'foo' is not one of",
        ("query",): "error: Missing argument 'INDEX_DIR'. (see 'ragroute query --help')",
        ("bench", "gate"): "error: Missing option '--data'. (see 'ragroute bench gate --help')",
        ("nosuch",): "error: No such command 'nosuch'. (see 'ragroute --help')",
        # ragroute's own options: the usage block, a "Try" line and the error until session 50
        ("--bogus", "query"): "error: No such option '--bogus'. (see 'ragroute --help')",
        ("--config", str(tmp_path), "query"): "error: Invalid value for '--config': File "
        f"'{tmp_path}' is a directory. (see 'ragroute --help')",
        # a value's own spaces shown as given: "'f oo' is not one of" until session 51
        ("build", str(corpus), "--out", str(tmp_path / "i"), "--method", "f  oo"): "error: Invalid "
        "value for '--method': 'f  oo' is not one of",
    }
    for args, expected in cases.items():
        result = runner.invoke(main, list(args), prog_name="ragroute")
        assert result.exit_code == 2 and len(result.output.splitlines()) == 1, result.output
        assert result.output.startswith(expected), result.output
    assert not (tmp_path / "i").exists()


def test_refine_and_mmap_only_where_they_apply(runner, corpus, tmp_path):
    out = tmp_path / "idx"
    result = runner.invoke(
        main, ["build", str(corpus), "--out", str(out), "--method", "bm25", "--refine", "4"]
    )
    assert result.exit_code == 2 and "--refine does not apply to --method bm25" in result.output
    result = runner.invoke(
        main, ["build", str(corpus), "--out", str(out), "--method", "dense", "--refine", "4"]
    )
    assert result.exit_code == 2 and "--refine does not apply to --dense-index flat" in result.output
    assert not out.exists()


def test_qdrant_option_only_with_the_qdrant_method(runner, corpus, tmp_path):
    out = tmp_path / "idx"
    result = runner.invoke(
        main, ["build", str(corpus), "--out", str(out), "--method", "dense", "--qdrant", "x"]
    )
    assert result.exit_code == 2 and "--qdrant does not apply to --method dense" in result.output
    result = runner.invoke(main, ["build", str(corpus), "--out", str(out), "--method", "qdrant"])
    assert result.exit_code == 2 and "--method qdrant needs --qdrant URL|FOLDER" in result.output
    # an index whose vectors lived in memory was published, then found nothing (until session 37)
    result = runner.invoke(
        main, ["build", str(corpus), "--out", str(out), "--method", "qdrant", "--qdrant", ":memory:"]
    )
    assert (
        result.exit_code == 2
        and "--qdrant :memory: keeps the vectors only while the build runs" in result.output
    )
    assert not out.exists()


def test_lancedb_build_records_its_folder_absolute_and_queries_from_anywhere(
    runner, corpus, tmp_path, monkeypatch
):
    pytest.importorskip("lancedb")
    out = tmp_path / "idx"
    result = runner.invoke(
        main, ["build", str(corpus), "--out", str(out), "--method", "lancedb", "--qdrant", "x"]
    )
    assert result.exit_code == 2 and "--qdrant does not apply to --method lancedb" in result.output
    result = runner.invoke(main, ["build", str(corpus), "--out", str(out), "--method", "lancedb"])
    assert result.exit_code == 2 and "--method lancedb needs --lancedb FOLDER|URI" in result.output
    assert not out.exists()
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")  # a relative folder, then another working directory
    result = runner.invoke(
        main, ["build", str(corpus), "--out", str(out), "--method", "lancedb", "--lancedb", "vectors"]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((published_path(out) / MANIFEST_NAME).read_text())
    assert manifest["params"]["lancedb"]["location"] == str(tmp_path / "work" / "vectors")
    monkeypatch.chdir(tmp_path)
    dense = tmp_path / "dense"
    assert (
        runner.invoke(main, ["build", str(corpus), "--out", str(dense), "--method", "dense"]).exit_code == 0
    )
    top = [runner.invoke(main, ["query", str(ix), "telescope orbit", "--json"]) for ix in (out, dense)]
    ids = [[h["doc_id"] for h in json.loads(r.output.strip().splitlines()[-1])["hits"]] for r in top]
    assert ids[0] == ids[1] and len(ids[0]) > 0
    # the trace names the encoder that ran, beside the build's (it named the build's until session 38)
    torch_run = runner.invoke(main, ["query", str(dense), "telescope orbit", "--json", "--backend", "torch"])
    load = json.loads(torch_run.output.strip().splitlines()[-1])["trace"][0]
    assert load["encoder"]["backend"] == "torch" and load["built_with"]["backend"] != "torch"


def test_query_filter_on_a_store_index_matches_text_and_says_what_it_cannot_match(runner, tmp_path):
    """A store matches text and integers: ``--filter price=12.5`` (the text and the number) or
    ``flag=true`` failed on a lancedb or qdrant index until session 39; now the text is matched
    and the alternatives left out are said on stderr."""
    pytest.importorskip("lancedb")
    rows = [
        {"_id": "p", "text": "blue pen", "price": "12.5", "flag": "true", "year": 2019},
        {"_id": "q", "text": "red pen", "price": "9", "flag": "false", "year": "2019"},
        {"_id": "r", "text": "green pen", "price": "12.5", "flag": "no", "year": 2018},
    ]
    data = tmp_path / "pens.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "idx"
    build = ["build", str(data), "--out", str(out), "--method", "lancedb", "--lancedb", str(tmp_path / "v")]
    assert runner.invoke(main, build).exit_code == 0

    def ids(*options):
        result = runner.invoke(main, ["query", str(out), "pen", "--json", *options])
        assert result.exit_code == 0, result.output
        return sorted(h["doc_id"] for h in json.loads(result.stdout.strip().splitlines()[-1])["hits"]), result

    found, result = ids("--filter", "price=12.5")
    assert found == ["p", "r"]
    assert (
        "note: a lancedb index matches text and integers only: --filter price=12.5 matches the text "
        "'12.5', not the number 12.5" in result.stderr
    )
    found, result = ids("--filter", "flag=true")
    assert found == ["p"] and "not the boolean true" in result.stderr
    found, result = ids("--filter", "year=2019")  # text and integer: both matched, nothing said
    assert found == ["p", "q"] and "note:" not in result.stderr


def test_a_store_build_into_a_folder_it_may_not_overwrite_is_refused_before_any_collection(
    runner, corpus, tmp_path
):
    lancedb = pytest.importorskip("lancedb")
    out = tmp_path / "my-folder"
    out.mkdir()
    (out / "mine.txt").write_text("a user's file")
    vectors = tmp_path / "vectors"
    result = runner.invoke(
        main, ["build", str(corpus), "--out", str(out), "--method", "lancedb", "--lancedb", str(vectors)]
    )
    assert result.exit_code == 2 and "it exists and is not a ragroute artifact" in result.output
    assert "loaded" not in result.output  # before the corpus was read
    # refused before the vectors were written: the store holds no collection nobody names
    assert not vectors.exists() or list(lancedb.connect(str(vectors)).table_names()) == []
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]


def test_ctrl_c_is_one_line_and_exit_130_and_publishes_nothing(runner, corpus, tmp_path, monkeypatch):
    # click printed "Aborted!" and exited 1, the status of a failure
    import ragroute.index.io as index_io

    out = tmp_path / "idx"
    assert runner.invoke(main, ["build", str(corpus), "--out", str(out), "--method", "bm25"]).exit_code == 0
    before = (out / "CURRENT").read_text()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(index_io, "save_index", interrupted)
    result = runner.invoke(main, ["build", str(corpus), "--out", str(out), "--method", "bm25"])
    assert result.exit_code == 130
    assert result.stderr.strip().splitlines()[-1] == (
        "error: interrupted (an artifact being written keeps its previous build)"
    )
    assert (out / "CURRENT").read_text() == before


def test_query_shows_only_public_documents(runner, tmp_path):
    """Every CLI command asks as a caller with no scopes: a document with access labels stays hidden."""
    data = tmp_path / "mixed.jsonl"
    rows = [
        {"_id": "pub", "text": "salary bands policy"},
        {"_id": "hr-1", "text": "salary of Ann", "access": ["hr"]},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "idx"
    assert runner.invoke(main, ["build", str(data), "--out", str(out), "--method", "bm25"]).exit_code == 0
    result = runner.invoke(main, ["query", str(out), "salary", "--json"])
    assert [h["doc_id"] for h in json.loads(result.stdout.strip().splitlines()[-1])["hits"]] == ["pub"]


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        # it said `error: encoder name is empty` (it went looking for an encoder first)
        ("bm99", "unknown index kind 'bm99': registered ones are bm25, dense"),
        ("dense", "its manifest records no encoder for a dense index"),
    ],
)
def test_query_on_an_index_it_cannot_read_says_why(runner, tmp_path, kind, message):
    from ragroute.store import write_artifact

    with write_artifact(tmp_path / "ix", "index", kind, params={"documents": 0}) as build:
        (build.path / "docs.jsonl").write_text("")
    result = runner.invoke(main, ["query", str(tmp_path / "ix"), "bread"])
    assert result.exit_code == 2
    assert message in result.output


def test_query_says_what_a_hybrid_index_score_is(runner, corpus, tmp_path):
    """A hybrid index's own scores are fusion values (0.0328), while `route` and the retrievers show
    the dense half's cosine: `query` now says which it prints (user walkthrough, session 39)."""
    out = tmp_path / "hy"
    assert runner.invoke(main, ["build", str(corpus), "--out", str(out), "--method", "hybrid"]).exit_code == 0
    result = runner.invoke(main, ["query", str(out), "toner"])
    assert result.exit_code == 0, result.output
    assert "score: the rrf fusion value of BM25 and dense (orders the hits, no meaning across queries" in (
        result.output
    )


def test_build_a_corpus_definitions_file_builds_every_corpus_for_a_routing_config(runner, tmp_path):
    """`corpora.yaml` + `index_dir:` is how a routing config names its sources, but only `ragroute
    demo` built those folders; `build corpora.yaml --out DIR` builds each corpus at its own
    granularity, modality and loader options (user walkthrough, session 39)."""
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "comets.md").write_text("# Comets\n\nIon tails.\n\nDust tails.\n", encoding="utf-8")
    parts = "sku,body\nP1,toner QT-350\nP2,drum unit\nP3,paper tray\nP4,fuser kit\n"
    (tmp_path / "parts.csv").write_text(parts, encoding="utf-8")
    (tmp_path / "corpora.yaml").write_text(
        "corpora:\n"
        "  notes: {path: notes, description: Notes on comets., granularity: paragraph}\n"
        "  parts: {path: parts.csv, modality: table, options: {text_column: body, id_column: sku}}\n",
        encoding="utf-8",
    )
    out = tmp_path / "indexes"
    result = runner.invoke(
        main, ["build", str(tmp_path / "corpora.yaml"), "--out", str(out), "--method", "bm25"]
    )
    assert result.exit_code == 0, result.output
    assert f"built 2 corpus indexes into {out}" in result.output
    assert "1 paragraph unit" in result.output and "4 document units" in result.output  # each its own
    hit = json.loads(
        runner.invoke(main, ["query", str(out / "parts"), "toner", "--json"]).stdout.strip().splitlines()[-1]
    )["hits"][0]
    assert (hit["doc_id"], hit["modality"]) == ("P1", "table")
    (tmp_path / "routing.yaml").write_text(
        f"corpora: corpora.yaml\nindex_dir: {out}\nrouter: {{kind: fixed}}\n", encoding="utf-8"
    )
    assert runner.invoke(main, ["config", "check", str(tmp_path / "routing.yaml")]).exit_code == 0
    refused = runner.invoke(
        main,
        [
            "build",
            str(tmp_path / "corpora.yaml"),
            "--out",
            str(out),
            "--method",
            "bm25",
            "--granularity",
            "section",
        ],
    )
    assert refused.exit_code == 2 and refused.output.strip().splitlines()[-1] == (
        f"error: --granularity does not apply to {tmp_path / 'corpora.yaml'}, a corpus definitions file "
        "(each corpus sets its own)"
    )


def test_build_of_corpus_definitions_writes_nothing_outside_out(runner, tmp_path):
    """Until session 41 a corpus named `../prod` was built at OUT/../prod, replacing the user's
    index there (exit 0): corpus names are one folder name, checked before anything is written."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "m.txt").write_text("my private document about apples", encoding="utf-8")
    prod = tmp_path / "prod"
    assert (
        runner.invoke(
            main, ["build", str(tmp_path / "mine"), "--out", str(prod), "--method", "bm25"]
        ).exit_code
        == 0
    )
    before = {p.relative_to(prod): p.read_bytes() for p in sorted(prod.rglob("*")) if p.is_file()}
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "o.txt").write_text("downloaded text about pears", encoding="utf-8")
    (defs / "corpora.yaml").write_text("corpora:\n  ok: {path: .}\n  ../prod: {path: .}\n", encoding="utf-8")
    out = tmp_path / "out"
    result = runner.invoke(main, ["build", str(defs / "corpora.yaml"), "--out", str(out), "--method", "bm25"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"error: {defs / 'corpora.yaml'}: corpus '../prod': a corpus name is the name of its index folder, "
        "so it may not hold '/' or '\\' (a path)"
    )
    assert not out.exists()
    assert {p.relative_to(prod): p.read_bytes() for p in sorted(prod.rglob("*")) if p.is_file()} == before


def test_build_of_corpus_definitions_names_the_corpus_that_fails_and_what_was_built(
    runner, tmp_path, monkeypatch
):
    """Until session 41 an empty corpus stopped the build with "no documents to index", naming no
    corpus, after the corpora before it were published: now every corpus is loaded first."""
    (tmp_path / "c").mkdir()
    for i in (1, 2, 3):
        (tmp_path / "c" / f"d{i}.txt").write_text(f"doc {i} apples", encoding="utf-8")
    (tmp_path / "empty").mkdir()
    defs = tmp_path / "corpora.yaml"
    defs.write_text("corpora:\n  one: {path: c}\n  two: {path: empty}\n", encoding="utf-8")
    out = tmp_path / "many"
    args = ["build", str(defs), "--out", str(out), "--method", "bm25"]
    result = runner.invoke(main, args)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"error: corpus 'two': no documents to index in {tmp_path / 'empty'}; no corpus was built"
    )
    assert not out.exists()
    # a corpus that fails while it is built, after another was published, says which were
    import ragroute.index.build as index_build

    real = index_build.build_index

    def build_index(units, method, **kwargs):
        if kwargs.get("name") == "two":
            raise RagrouteError("the disk is full")
        return real(units, method, **kwargs)

    monkeypatch.setattr(index_build, "build_index", build_index)
    (tmp_path / "empty" / "e.txt").write_text("doc e pears", encoding="utf-8")
    result = runner.invoke(main, args)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"error: corpus 'two': the disk is full; already built in {out}: 'one'"
    )
    assert (out / "one" / "CURRENT").is_file() and not (out / "two").exists()


def test_ctrl_c_in_a_corpora_build_says_which_corpora_were_built(runner, tmp_path, monkeypatch):
    """Ctrl-C while the second corpus was built said only that an artifact keeps its previous
    build, not that --out now held the first corpus's new index (until session 43)."""
    import ragroute.index.build as index_build

    for name in ("c1", "c2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "d.txt").write_text(f"doc {name} apples", encoding="utf-8")
    defs = tmp_path / "corpora.yaml"
    defs.write_text("corpora:\n  one: {path: c1}\n  two: {path: c2}\n", encoding="utf-8")
    out = tmp_path / "many"
    real = index_build.build_index

    def build_index(units, method, **kwargs):
        if kwargs.get("name") == "two":
            raise KeyboardInterrupt
        return real(units, method, **kwargs)

    monkeypatch.setattr(index_build, "build_index", build_index)
    result = runner.invoke(main, ["build", str(defs), "--out", str(out), "--method", "bm25"])
    assert result.exit_code == 130
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: interrupted while building corpus 'two'; already built in {out}: 'one' "
        "(an artifact being written keeps its previous build)"
    )
    assert (out / "one" / "CURRENT").is_file() and not (out / "two" / "CURRENT").exists()


def test_query_says_an_ivfpq_score_approximates_the_cosine():
    """IVF-PQ reads its scores from compressed codes (0.6831 where the cosine is 0.6977 on a
    Glasgow med query): `ragroute query` called them the cosine (session 40 audit)."""
    from ragroute.cli.query import _score_meaning

    assert "IVF-PQ's compressed codes approximate it" in _score_meaning(
        "dense", {"dense": {"factory": "ivfpq"}}
    )
    exact = {"dense": {"factory": "ivfpq", "refine": 4}}  # re-ranked by the stored vectors: the cosine
    assert _score_meaning("dense", exact) == "the cosine similarity of query and document"
    assert (
        _score_meaning("dense", {"dense": {"factory": "hnsw"}})
        == "the cosine similarity of query and document"
    )


def test_query_prints_a_title_with_line_breaks_on_the_hit_line(runner, tmp_path):
    """Session 43: a title holding a line break (a JSONL corpus's) split the hit's first line, and
    the title's second half read as the hit's snippet."""
    corpus = tmp_path / "c.jsonl"
    rows = [{"id": "x1", "title": "Line one\nLine two", "text": "alpha beta"}, {"id": "x2", "text": "gamma"}]
    rows.append({"id": "x3", "text": "delta"})
    corpus.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "idx"
    assert runner.invoke(main, ["build", str(corpus), "--out", str(out), "--method", "bm25"]).exit_code == 0
    result = runner.invoke(main, ["query", str(out), "alpha"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[2].endswith("x1  Line one Line two") and lines[3].strip() == "alpha beta"


def test_query_json_on_a_stdout_that_cannot_hold_the_text_escapes_it(runner, tmp_path):
    """--json wrote non-ASCII text as it is: on a stdout whose encoding lacks a character (a pipe
    on Windows is cp1252; PYTHONIOENCODING=ascii) the JSON line was a UnicodeEncodeError traceback.
    JSON escapes say the same: the line is written with them there, and stays parseable."""
    corpus = tmp_path / "c.jsonl"
    rows = [{"id": "東京-1", "title": "東京 café", "text": "solar wind over 東京"}]
    rows += [{"id": "x2", "text": "gamma"}, {"id": "x3", "text": "delta"}]
    corpus.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    out = tmp_path / "idx"
    assert runner.invoke(main, ["build", str(corpus), "--out", str(out), "--method", "bm25"]).exit_code == 0
    for charset in ("cp1252", "ascii"):
        result = CliRunner(charset=charset).invoke(main, ["query", str(out), "solar wind", "--json"])
        assert result.exit_code == 0, (charset, result.output, result.exception)
        hit = json.loads(result.stdout.splitlines()[-1])["hits"][0]
        assert (hit["doc_id"], hit["title"]) == ("東京-1", "東京 café")
    # on a UTF-8 stdout the text stays as it is (readable), as before
    result = runner.invoke(main, ["query", str(out), "solar wind", "--json"])
    assert '"title": "東京 café"' in result.stdout.splitlines()[-1]


def test_emit_json_writes_strict_json_of_any_value_a_hit_may_carry(monkeypatch):
    """A factory source's hits (`kind: python`, LangChain, LlamaIndex) carry metadata ragroute never
    saved: a date, a set, numpy keys, a lone surrogate. --json raised on each (TypeError "not JSON
    serialisable", "keys must be str...", UnicodeEncodeError) after the work was done: a traceback
    instead of the one line a script reads."""
    import datetime
    import io
    import sys

    import numpy as np

    from ragroute.cli.output import emit_json

    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # strict, as a UTF-8 terminal or pipe
    monkeypatch.setattr(sys, "stdout", stream)
    emit_json(
        {
            "opened": datetime.date(2024, 1, 2),
            "at": datetime.datetime(2024, 1, 2, 3, 4, 5),
            "tags": {"printer", "jam"},
            "counts": {np.int64(3): 1, 2.5: 2, (1, 2): 3, None: 4},
            "text": "bad byte \udc80 kept",
            "p": [np.float32("nan"), np.float64(0.5)],
        }
    )
    stream.flush()
    line = stream.buffer.getvalue().decode("utf-8")
    assert line.endswith("\n") and line.count("\n") == 1
    payload = json.loads(line, parse_constant=lambda name: pytest.fail(f"non-standard JSON: {name}"))
    assert payload == {
        "opened": "2024-01-02",
        "at": "2024-01-02T03:04:05",
        "tags": ["jam", "printer"],  # sorted: the same line every run
        "counts": {"3": 1, "2.5": 2, "(1, 2)": 3, "null": 4},
        "text": "bad byte \udc80 kept",
        "p": [None, 0.5],
    }


def test_a_training_reports_nan_is_null_not_the_nan_no_json_parser_reads():
    """`rerank train`, `calibrate` and `average` printed their reports with json.dumps, which writes
    a NaN (a logit AUROC over one class) as `NaN` (until session 48)."""
    import numpy as np

    from ragroute.cli.output import report_text

    text = report_text({"logit_auroc": float("nan"), "pairs": np.int64(3), "sets": {"toollens"}})
    assert json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard {name}")) == {
        "logit_auroc": None,
        "pairs": 3,
        "sets": ["toollens"],
    }
    assert text.startswith("{\n  ")  # still indented for reading


def test_an_out_under_a_file_is_refused_before_the_corpus_is_read(runner, corpus, tmp_path):
    """`build --out notes.txt/idx` read (and encoded) the whole corpus, then said
    `error: .../notes.txt/idx/builds: Not a directory`, naming a path that was not the problem
    (until session 53)."""
    (tmp_path / "notes.txt").write_text("mine")
    out = tmp_path / "notes.txt" / "idx"
    result = runner.invoke(main, ["build", str(corpus), "--out", str(out), "--method", "bm25"])
    assert result.exit_code == 2 and "loaded" not in result.output, result.output  # before any work
    assert result.output == (
        f"error: cannot write an artifact at {out}: {tmp_path / 'notes.txt'} is a file, not a folder\n"
    )
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_artifact_folder_given_as_the_corpus_says_so(runner, corpus, tmp_path):
    """`build IDX --out OUT` (an index folder as the corpus) said `IDX: a folder corpus reads .txt,
    ... files and this one has none; ... give that file as the corpus (e.g.
    IDX/builds/ID/bm25_vocab.json)`: a file of the index's own build (until session 53)."""
    idx = tmp_path / "idx"
    assert runner.invoke(main, ["build", str(corpus), "--out", str(idx), "--method", "bm25"]).exit_code == 0
    before = (idx / "CURRENT").read_text()
    result = runner.invoke(main, ["build", str(idx), "--out", str(tmp_path / "out"), "--method", "bm25"])
    assert result.exit_code == 2, result.output
    assert result.output == (
        f"error: {idx} holds an index (a folder a ragroute command wrote), not a corpus: give a corpus "
        "folder or file (an index's is the one it was built from)\n"
    )
    assert (idx / "CURRENT").read_text() == before and not (tmp_path / "out").exists()


def test_an_index_built_inside_its_corpus_folder_is_no_part_of_the_corpus(runner, corpus, tmp_path):
    """`build notes --out notes/idx` run again counted the index's files as files not read, named its
    docs.jsonl "a corpus of its own", and a folder holding only an index was refused with "give that
    file as the corpus (e.g. idx/builds/ID/bm25_vocab.json)" (until session 56)."""
    idx = corpus / "idx"
    args = ["build", str(corpus), "--out", str(idx), "--method", "bm25"]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    again = runner.invoke(main, args)
    assert again.exit_code == 0, again.output
    said = f"warning: {corpus}: 1 folder not read (idx): it holds what a ragroute command wrote"
    assert said in again.output
    assert "not read (" not in again.output.replace("1 folder not read (idx)", "")
    assert f"loaded 3 documents from {corpus} -> 3 document units" in again.output
    alone = tmp_path / "alone"
    assert runner.invoke(main, [*args[:3], str(alone / "idx"), *args[4:]]).exit_code == 0
    result = runner.invoke(main, ["build", str(alone), "--out", str(tmp_path / "out"), "--method", "bm25"])
    assert result.exit_code == 2 and "bm25_vocab" not in result.output, result.output
    assert result.output == (
        f"error: {alone}: a folder corpus reads .txt, .md, .markdown, .csv, .tsv files and this one has "
        "none; 1 folder not read (idx): it holds what a ragroute command wrote (an index, a skill "
        "index...), not corpus files: give the corpus folder or file an index was built from\n"
    )
