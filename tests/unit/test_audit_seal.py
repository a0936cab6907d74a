"""The audit seal key and the seals themselves (runtime/audit_seal.py); the store's use of them is
tested in tests/integration/test_store.py."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from runtime.audit_seal import KEY_FILE_NAME, AuditSealer, seal_key
from runtime.settings import Settings

KEY = "k" * 32


def test_the_key_comes_from_the_setting_then_the_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "seal.key"
    key_file.write_text("from-the-file-0123456789\nignored\n")
    assert seal_key(Settings(audit_seal_key=KEY, audit_seal_key_file=key_file, data_dir=tmp_path)) == KEY.encode()
    assert seal_key(Settings(audit_seal_key_file=key_file, data_dir=tmp_path)) == b"from-the-file-0123456789"
    assert not (tmp_path / KEY_FILE_NAME).exists()


def test_a_missing_or_empty_key_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be read"):
        seal_key(Settings(audit_seal_key_file=tmp_path / "nope", data_dir=tmp_path))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        seal_key(Settings(audit_seal_key_file=tmp_path / "empty", data_dir=tmp_path))


def test_in_development_a_key_is_generated_once_into_the_data_dir_readable_by_its_owner_only(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = seal_key(settings)
    path = tmp_path / "data" / KEY_FILE_NAME
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(first) == 64 and seal_key(settings) == first
    assert [p.name for p in path.parent.iterdir()] == [KEY_FILE_NAME]  # no temporary file left


def _key_in_process(data_dir: str, out: multiprocessing.Queue[bytes]) -> None:
    out.put(seal_key(Settings(data_dir=Path(data_dir))))


def test_processes_racing_to_generate_the_key_agree_on_one(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[bytes] = ctx.Queue()
    procs = [ctx.Process(target=_key_in_process, args=(str(tmp_path), queue)) for _ in range(4)]
    for p in procs:
        p.start()
    keys = {queue.get(timeout=30) for _ in procs}
    for p in procs:
        p.join(30)
    assert len(keys) == 1 and keys == {seal_key(Settings(data_dir=tmp_path))}


def test_production_refuses_to_run_without_a_key(tmp_path: Path) -> None:
    # model_construct: only the seal settings matter here (production needs more than them).
    with pytest.raises(ValueError, match="CROSSDOCK_AUDIT_SEAL_KEY"):
        seal_key(Settings.model_construct(env="production", data_dir=tmp_path))
    assert not (tmp_path / KEY_FILE_NAME).exists()
    settings = Settings.model_construct(env="production", audit_seal_key=SecretStr(KEY), data_dir=tmp_path)
    assert seal_key(settings) == KEY.encode()


def test_the_settings_are_read_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSDOCK_AUDIT_SEAL_KEY", KEY)
    monkeypatch.setenv("CROSSDOCK_AUDIT_SEAL_FILE", str(tmp_path / "seals.jsonl"))
    sealer = AuditSealer.from_settings(Settings(data_dir=tmp_path))
    assert sealer.file == tmp_path / "seals.jsonl"
    assert sealer.mac(1, "ab") == AuditSealer(KEY.encode()).mac(1, "ab")
    assert KEY not in repr(sealer) and KEY not in repr(Settings())


def test_a_seal_checks_only_with_its_key_and_its_seq_and_hash() -> None:
    sealer = AuditSealer(KEY.encode())
    seal = sealer.seal(7, "a" * 64, datetime.now(UTC))
    assert sealer.problem(seal.seq, seal.hash, seal.mac, seal.key_id) is None
    assert "bad MAC" in (sealer.problem(8, seal.hash, seal.mac, seal.key_id) or "")
    assert "bad MAC" in (sealer.problem(7, "b" * 64, seal.mac, seal.key_id) or "")
    other = AuditSealer(b"another key of 32 bytes, or more")
    assert "another key" in (other.problem(seal.seq, seal.hash, seal.mac, seal.key_id) or "")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        AuditSealer(b"short")
