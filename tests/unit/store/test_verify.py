"""store/verify.py: an Artifact directory held to its manifest (sizes; sha256 when deep), and where a damaged
one is kept."""

from __future__ import annotations

from pathlib import Path

from datasweep.store.manifest import FINGERPRINT_NAME, MANIFEST_NAME, write_manifest
from datasweep.store.verify import check_artifact, damaged_relpath, set_damaged_aside

FP = "ab" * 32


def artifact(root: Path, rel: str = "_shared/Copa/temp07") -> Path:
    directory = root / rel
    (directory / "Copa").mkdir(parents=True)
    (directory / "Copa" / "copa_train.jsonl").write_text('{"id": 1}\n{"id": 2}\n')
    (directory / "config.yaml").write_text("temperature: 0.7\n")
    (directory / FINGERPRINT_NAME).write_text(FP + "\n")
    write_manifest(directory, fingerprint=FP, stage="generate")
    return directory


def test_an_intact_artifact_is_ok_deep_or_not(tmp_path: Path) -> None:
    directory = artifact(tmp_path)
    assert not check_artifact(directory)
    assert not check_artifact(directory, deep=True)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    directory = artifact(tmp_path)
    (directory / "Copa" / "copa_train.jsonl").unlink()
    damage = check_artifact(directory)
    assert damage.problems == ("missing file Copa/copa_train.jsonl",)


def test_a_changed_size_says_from_what_to_what(tmp_path: Path) -> None:
    directory = artifact(tmp_path)
    (directory / "config.yaml").write_text("")
    assert check_artifact(directory).problems == ("size of config.yaml 17 → 0",)


def test_a_same_size_change_is_found_only_by_the_deep_check(tmp_path: Path) -> None:
    directory = artifact(tmp_path)
    (directory / "config.yaml").write_text("temperature: 0.9\n")  # same length
    assert not check_artifact(directory)
    assert check_artifact(directory, deep=True).problems == ("sha256 of config.yaml differs",)


def test_no_manifest_or_directory_is_damage_only_where_one_is_required(tmp_path: Path) -> None:
    directory = artifact(tmp_path)
    (directory / MANIFEST_NAME).unlink()
    assert check_artifact(directory).problems == ("missing file manifest.json",)
    assert not check_artifact(directory, manifest_required=False)  # kwok: no worker wrote one
    assert check_artifact(tmp_path / "gone").problems[0].startswith("missing directory")
    assert not check_artifact(tmp_path / "gone", manifest_required=False)


def test_an_unreadable_manifest_is_damage(tmp_path: Path) -> None:
    directory = artifact(tmp_path)
    (directory / MANIFEST_NAME).write_text("{not json")
    assert check_artifact(directory).problems[0].startswith("unreadable manifest.json")


def test_the_damaged_directory_is_kept_under_an_exact_name_and_the_claim_stays(tmp_path: Path) -> None:
    directory = artifact(tmp_path)
    (directory / "config.yaml").unlink()
    assert damaged_relpath("_shared/Copa/temp07", 1) == "_shared/Copa/.temp07.damaged-1"
    assert damaged_relpath("_shared/Copa/temp07/train/qa-0123", 2) == "_shared/Copa/temp07/train/.qa-0123.damaged-2"
    aside = set_damaged_aside(tmp_path, "_shared/Copa/temp07", 1)
    assert aside == "_shared/Copa/.temp07.damaged-1"
    assert (tmp_path / aside / MANIFEST_NAME).is_file()
    assert sorted(p.name for p in directory.iterdir()) == [FINGERPRINT_NAME]  # the claim, for the replacement
    # run again (a handler after a restart): the move is found done, nothing else moves
    assert set_damaged_aside(tmp_path, "_shared/Copa/temp07", 1) == aside
    assert sorted(p.name for p in directory.iterdir()) == [FINGERPRINT_NAME]
    assert set_damaged_aside(tmp_path, "_shared/Copa/none", 1) is None
