"""The request store: identities, first-answer-wins storage, torn lines, and concurrent writers with a kill."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime

import pytest

from datasweep.store.requests import RequestStore, StoredAnswer, request_identity

BODY = {
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": "Rephrase: a cat."}],
    "temperature": 0.7,
    "top_p": 1.0,
    "max_tokens": 256,
}


def test_identity_covers_every_field_and_only_the_content():
    base = request_identity("openai", BODY, salt="1")
    assert base == request_identity("openai", dict(reversed(list(BODY.items()))), salt="1")  # key order
    # a default spelled out, and 1 vs 1.0, are the same request
    assert base == request_identity("openai", {**BODY, "n": 1, "frequency_penalty": 0, "top_p": 1}, salt="1")
    different = [
        request_identity("openai-compatible", BODY, salt="1"),
        request_identity("openai", BODY, salt="2"),
        request_identity("openai", BODY, salt="1", sample=1),
        request_identity("openai", {**BODY, "model": "gpt-4o-mini"}, salt="1"),
        request_identity("openai", {**BODY, "temperature": 0.0}, salt="1"),
        request_identity("openai", {**BODY, "seed": 7}, salt="1"),
        request_identity("openai", {**BODY, "n": 2}, salt="1"),
        request_identity("openai", {**BODY, "max_tokens": 255}, salt="1"),
        request_identity("openai", {**BODY, "messages": [{"role": "user", "content": "Rephrase: a dog."}]}, salt="1"),
        request_identity(
            "openai", {**BODY, "messages": [{"role": "system", "content": "x"}, *BODY["messages"]]}, salt="1"
        ),
    ]
    assert len({base, *different}) == len(different) + 1


def answer(identity: str, text: str = "t") -> StoredAnswer:
    return StoredAnswer(identity, text, 3, 4, "stop", "gpt-4o-2024-08-06", "fp_1")


def test_put_then_lookup_keeps_the_first_answer_and_its_provenance(tmp_path):
    store = RequestStore(tmp_path / "requests")
    first = request_identity("openai", BODY)
    other = request_identity("openai", {**BODY, "seed": 1})
    assert store.lookup([first]) == {}
    assert store.put([answer(first, "first")]) == 1
    assert store.put([answer(first, "second"), answer(other, "other")]) == 1  # first answer wins
    found = RequestStore(tmp_path / "requests").lookup([first, other, "f" * 64])
    assert found[first].text == "first"
    assert (found[first].model, found[first].system_fingerprint, found[first].prompt_tokens) == (
        "gpt-4o-2024-08-06",
        "fp_1",
        3,
    )
    assert found[first].answered_at
    assert found[other].text == "other"
    assert set(found) == {first, other}
    assert store.count() == 2


@pytest.mark.parametrize("others", [0, 300], ids=["small shard: index parsed", "large shard: bytes searched"])
def test_a_torn_last_line_is_skipped_and_ended_by_the_next_writer(tmp_path, others):
    store = RequestStore(tmp_path)
    first = "abc" + "0" * 61
    filler = [answer(f"abc{index:061x}".replace("0", "f", 1)) for index in range(others)]
    store.put([answer(first, "kept"), *filler])
    # a writer killed mid-append: half a data line and half an index line, no newline
    with (tmp_path / "v1" / "abc.jsonl").open("ab") as handle:
        handle.write(b'{"id":"abc' + b"1" * 30)
    with (tmp_path / "v1" / "abc.idx").open("ab") as handle:
        handle.write(b"abc" + b"1" * 61 + b" 12 3")  # of " 12 345;\n"
    torn = "abc" + "1" * 61
    assert store.lookup([first]).keys() == {first}
    assert store.lookup([torn]) == {}
    store.put([answer(torn, "after")])
    stored = {a.identity: a.text for a in store.iter_answers("abc")}
    assert (stored[first], stored[torn], len(stored)) == ("kept", "after", others + 2)
    assert store.lookup([torn])[torn].text == "after"
    assert store.lookup([first])[first].text == "kept"


def test_an_index_entry_that_points_at_garbage_is_a_miss(tmp_path):
    store = RequestStore(tmp_path)
    identity = "cde" + "2" * 61
    store.put([answer(identity)])
    index = tmp_path / "v1" / "cde.idx"
    index.write_text(index.read_text().replace(" 0 ", " 5 "))
    assert store.lookup([identity]) == {}


WRITER = textwrap.dedent(
    """
    import sys, hashlib
    from pathlib import Path
    from datasweep.store.requests import RequestStore, StoredAnswer
    store, name, count = RequestStore(Path(sys.argv[1])), sys.argv[2], int(sys.argv[3])
    for start in range(0, count, 7):
        batch = []
        for index in range(start, min(start + 7, count)):
            identity = hashlib.sha256(f"{name}-{index}".encode()).hexdigest()
            batch.append(StoredAnswer(identity, f"{name}-{index} " + "x" * 2000, index, 1))
        store.put(batch)
        print(start + len(batch), flush=True)
    """
)


def test_concurrent_writers_and_a_killed_one_leave_every_complete_answer_readable(tmp_path):
    root = tmp_path / "requests"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    count = 400
    writers = {
        name: subprocess.Popen(
            # the victim has far more to write: it is killed mid-run
            [sys.executable, "-c", WRITER, str(root), name, str(count * 100 if name == "victim" else count)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for name in ("a", "b", "c", "victim")
    }
    victim = writers["victim"]
    assert victim.stdout is not None
    progress = int(victim.stdout.readline())  # it has stored something and goes on writing
    time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    for name, process in writers.items():
        if name != "victim":
            assert process.wait(timeout=120) == 0

    store = RequestStore(root)

    def identity(name: str, index: int) -> str:
        return hashlib.sha256(f"{name}-{index}".encode()).hexdigest()

    complete = [identity(name, index) for name in ("a", "b", "c") for index in range(count)]
    found = store.lookup(complete)
    assert len(found) == len(complete)
    assert all(found[i].text.split(" ")[0] == f"{n}-{k}" for n in "abc" for k in range(count) for i in [identity(n, k)])
    # the victim's answers: at least what it reported, each either readable in full or absent
    victim_ids = [identity("victim", index) for index in range(count * 100)]
    victim_found = store.lookup(victim_ids)
    assert progress <= len(victim_found) < count * 100
    assert all(victim_found[i].text.startswith(f"victim-{victim_ids.index(i)} ") for i in victim_found)
    # the index is consistent: every entry points at the complete line of its own answer
    for shard in store.shards():
        data = (root / "v1" / f"{shard}.jsonl").read_bytes()
        for name, (offset, length) in store.read_index(shard).items():
            assert json.loads(data[offset : offset + length])["id"] == name
    assert store.count() == len(complete) + len(victim_found)
    # and the store takes more writes after the kill
    late = identity("late", 0)
    store.put([answer(late)])
    assert late in store.lookup([late])


def test_store_files_take_the_volume_file_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("DATASWEEP_FILE_MODE", "0664")
    RequestStore(tmp_path).put([answer("fed" + "3" * 61)])
    assert {path.stat().st_mode & 0o777 for path in (tmp_path / "v1").iterdir()} == {0o664}


def test_compact_keeps_only_the_referenced_answers(tmp_path):
    store = RequestStore(tmp_path)
    names = [f"{prefix}{index:063x}" for prefix in "ab" for index in range(3)]
    store.put([answer(name, f"text {name}") for name in names])
    keep = {names[0], names[4]}
    before = sum(path.stat().st_size for path in (tmp_path / "v1").iterdir())
    assert store.compact(keep, dry_run=True)[0] == 4
    assert store.count() == 6  # a dry run changes nothing
    dropped, freed, recent = store.compact(keep)
    assert (dropped, recent) == (4, 0)
    assert freed == before - sum(path.stat().st_size for path in (tmp_path / "v1").iterdir()) > 0
    assert {name: a.text for name, a in store.lookup(names).items()} == {n: f"text {n}" for n in keep}
    store.put([answer(names[1], "again")])  # writers go on after a compaction
    assert store.lookup([names[1]])[names[1]].text == "again"


# Writers that put answers they keep (and some nobody keeps), all into one shard, while a compaction runs.
SHARD_WRITER = textwrap.dedent(
    """
    import sys, hashlib, random, time
    from pathlib import Path
    from datasweep.store.requests import RequestStore, StoredAnswer
    store, name, count = RequestStore(Path(sys.argv[1])), sys.argv[2], int(sys.argv[3])
    def identity(text):
        return "abc" + hashlib.sha256(text.encode()).hexdigest()[3:]
    for index in range(count):
        store.put([
            StoredAnswer(identity(f"{name}-{index}"), f"{name}-{index} " + "x" * 200, index, 1),
            StoredAnswer(identity(f"{name}-{index}-garbage"), "garbage", 0, 0),
        ])
        time.sleep(random.random() * 0.02)  # a worker does other things between its stores
    """
)
COMPACTOR = textwrap.dedent(
    """
    import sys, hashlib
    from pathlib import Path
    from datasweep.store.requests import RequestStore
    store, names, count = RequestStore(Path(sys.argv[1])), sys.argv[2].split(","), int(sys.argv[3])
    keep = {"abc" + hashlib.sha256(f"{n}-{i}".encode()).hexdigest()[3:] for n in names for i in range(count)}
    while True:  # until killed: every pass finds garbage to drop, so every pass rewrites the shard
        store.compact(keep)
        print("pass", flush=True)
    """
)


def test_a_compaction_while_writers_append_loses_no_kept_answer(tmp_path):
    root = tmp_path / "requests"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    names, count = ("a", "b", "c"), 100
    store = RequestStore(root)
    store.put([answer("abc" + "0" * 61)])  # the shard exists before the compactor starts
    compactor = subprocess.Popen(
        [sys.executable, "-c", COMPACTOR, str(root), ",".join(names), str(count)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert compactor.stdout is not None
    assert compactor.stdout.readline() == "pass\n"
    writers = [
        subprocess.Popen([sys.executable, "-c", SHARD_WRITER, str(root), name, str(count)], env=env) for name in names
    ]
    for writer in writers:
        assert writer.wait(timeout=300) == 0
    passes = 0
    while passes < 3:  # compactions that started after the last write
        passes += compactor.stdout.readline() == "pass\n"
    compactor.send_signal(signal.SIGKILL)  # perhaps mid-rewrite: a kill leaves the old shard or the new one
    compactor.wait()

    def identity(text: str) -> str:
        return "abc" + hashlib.sha256(text.encode()).hexdigest()[3:]

    wanted = {identity(f"{name}-{index}"): f"{name}-{index}" for name in names for index in range(count)}
    store.compact(set(wanted))  # a compaction after the kill leaves exactly what is kept
    found = store.lookup(wanted)
    assert sorted(set(wanted) - set(found)) == []
    assert all(found[i].text.split(" ")[0] == wanted[i] for i in wanted)
    assert store.count() == len(wanted)
    data = (root / "v1" / "abc.jsonl").read_bytes()
    for name, (offset, length) in store.read_index("abc").items():
        assert json.loads(data[offset : offset + length])["id"] == name


def test_compact_keeps_unreferenced_answers_younger_than_the_grace_period(tmp_path):
    store = RequestStore(tmp_path)
    old, fresh, listed, undated = (f"{prefix}{0:063x}" for prefix in "abcd")
    store.put(
        [
            StoredAnswer(old, "old", answered_at="2026-01-01T00:00:00+00:00"),
            StoredAnswer(fresh, "fresh", answered_at="2026-01-03T00:00:00+00:00"),
            StoredAnswer(listed, "listed", answered_at="2025-01-01T00:00:00+00:00"),
            StoredAnswer(undated, "undated", answered_at="yesterday"),  # an unreadable time counts as old
        ]
    )
    cutoff = datetime(2026, 1, 2, tzinfo=UTC)
    assert store.compact({listed}, dry_run=True, keep_after=cutoff)[::2] == (2, 1)
    assert store.count() == 4
    assert store.compact({listed}, keep_after=cutoff)[::2] == (2, 1)
    assert set(store.lookup([old, fresh, listed, undated])) == {fresh, listed}
    assert store.compact({listed}, keep_after=None)[::2] == (1, 0)  # no grace period: only what is listed
    assert set(store.lookup([fresh, listed])) == {listed}


def test_compact_mends_an_index_a_killed_compaction_left_stale(tmp_path):
    store = RequestStore(tmp_path)
    names = [f"abc{index:061x}" for index in range(4)]
    store.put([answer(name, f"text {name}") for name in names])
    index = (tmp_path / "v1" / "abc.idx").read_bytes()
    # killed between its two renames: the new data (the first answer dropped) with the old index
    data = (tmp_path / "v1" / "abc.jsonl").read_bytes()
    (tmp_path / "v1" / "abc.jsonl").write_bytes(data[data.index(b"\n") + 1 :])
    assert (tmp_path / "v1" / "abc.idx").read_bytes() == index
    assert store.lookup(names) == {}  # stale offsets: misses, never a wrong answer
    assert store.compact(set(names))[::2] == (0, 0)
    assert {name: a.text for name, a in store.lookup(names).items()} == {n: f"text {n}" for n in names[1:]}


def test_identities_are_those_the_stored_answers_were_filed_under():
    # pinned: a change to how an identity is computed (even a faster one) must not orphan every stored answer
    body = {**BODY, "messages": [{"role": "user", "content": "Rephrase: a cat. ü"}]}
    assert request_identity("openai", body, salt="1") == (
        "d690a80e36d90b1b9c9d78a70592ed5aa5e0c66a83d80458976b82873bcf6ad2"
    )
    assert request_identity("openai-compatible", {**body, "seed": 7, "n": 2.0}, sample=3) == (
        "50f41b68c90382f0f65d8a2f60e4afb8478a849bf28f86482edf220c8f11c4b1"
    )


def v1_line(identity: str, text: str) -> bytes:
    """A data line as the first writer of the v1 format wrote it (json.dumps of to_json, compact, UTF-8)."""
    return (
        f'{{"id":"{identity}","text":"{text}","prompt_tokens":3,"completion_tokens":4,"finish_reason":"stop",'
        f'"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_1","answered_at":"2026-12-01T10:00:00+00:00"}}\n'
    ).encode()


@pytest.mark.parametrize("others", [0, 300], ids=["small shard: index parsed", "large shard: bytes searched"])
def test_a_v1_shard_as_written_before_is_read_and_a_torn_first_entry_is_skipped(tmp_path, others):
    # bytes as the v1 writer left them: a writer killed inside an index line (completed by the next writer's
    # newline, without its ';'), then the next writer's whole entry for the same identity
    kept, torn, absent = "abd" + "1" * 61, "abd" + "2" * 61, "abd" + "3" * 61
    fillers = [f"abd{index:061x}".replace("0", "f", 1) for index in range(others)]
    data, index = b"", b""
    for identity, text in [(kept, "kept"), (torn, "torn"), (torn, "after"), *[(f, "filler") for f in fillers]]:
        line = v1_line(identity, text)
        index += f"{identity} {len(data)} {len(line)}".encode() + (b"\n" if text == "torn" else b";\n")
        data += line
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "abd.jsonl").write_bytes(data)
    (tmp_path / "v1" / "abd.idx").write_bytes(index)
    found = RequestStore(tmp_path).lookup([kept, torn, absent, *fillers[:3]])
    assert {name: a.text for name, a in found.items()} == {
        kept: "kept",
        torn: "after",
        **dict.fromkeys(fillers[:3], "filler"),
    }
    assert found[kept] == StoredAnswer(
        kept, "kept", 3, 4, "stop", "gpt-4o-2024-08-06", "fp_1", "2026-12-01T10:00:00+00:00"
    )


def test_an_index_without_its_data_file_is_a_miss(tmp_path):
    store = RequestStore(tmp_path)
    identity = "bcd" + "4" * 61
    store.put([answer(identity)])
    (tmp_path / "v1" / "bcd.jsonl").unlink()
    assert store.lookup([identity]) == {}


def test_searching_the_bytes_and_parsing_the_index_find_the_same_answers(tmp_path, monkeypatch):
    store = RequestStore(tmp_path)
    stored = [hashlib.sha256(f"s-{index}".encode()).hexdigest() for index in range(3000)]
    store.put([answer(identity, identity[-6:]) for identity in stored])
    wanted = stored[::7] + [hashlib.sha256(f"m-{index}".encode()).hexdigest() for index in range(300)]
    results = []
    # every shard searched by bytes, then every shard's index parsed, then each index read in many small reads
    for below, at_once in ((0, 1 << 16), (10**9, 1 << 16), (10**9, 97)):
        monkeypatch.setattr("datasweep.store.requests.FIND_BELOW", below)
        monkeypatch.setattr("datasweep.store.requests.READ_AT_ONCE", at_once)
        results.append({name: a.text for name, a in store.lookup(wanted).items()})
    assert results[0] == results[1] == results[2] == {identity: identity[-6:] for identity in stored[::7]}
