"""The replay's plan per key (pure) and the export line format, without a cluster."""

from __future__ import annotations

import json

import pytest

from etcd_dr.diverged.replay import Act, Exported, Op, load, plan_row
from etcd_dr.errors import InputError

W = Exported(b"/k", b"old", mod_revision=9, cluster_mod_revision=4, host="master1", lease=0x1F)


def test_put_when_the_key_is_as_exported_else_changed_unless_forced():
    assert plan_row(W, (4, b"cluster"), force=False).act is Act.PUT
    assert plan_row(Exported(b"/n", b"v", 9, 0, "m"), None, force=False).act is Act.PUT  # absent then/now
    changed = plan_row(W, (7, b"newer"), force=False)
    assert changed.act is Act.CHANGED and changed.differs and changed.current_mod_revision == 7
    assert plan_row(W, (7, b"newer"), force=True).act is Act.PUT
    same = plan_row(W, (12, b"old"), force=False)
    assert same.act is Act.SAME and not same.differs


def test_export_lines_round_trip_with_the_lease_note(tmp_path):
    d = W.to_json("/var/lib/etcd.bak-x")
    assert d["key_text"] == "/k" and "lease 1f dropped" in d["note"]
    f = tmp_path / "e.jsonl"
    f.write_text(json.dumps(d) + "\n\n")
    assert load(f) == [W]


def test_a_bad_line_names_file_line_and_field(tmp_path):
    f = tmp_path / "e.jsonl"
    d = W.to_json("/x")
    del d["cluster_mod_revision"]
    f.write_text(json.dumps(W.to_json("/x")) + "\n" + json.dumps(d) + "\n")
    with pytest.raises(InputError, match=r"e.jsonl:2: field cluster_mod_revision missing"):
        load(f)
    f.write_text("{not json\n")
    with pytest.raises(InputError, match=r"e.jsonl:1: not JSON"):
        load(f)


D = Exported(b"/gone", b"", 0, cluster_mod_revision=3, host="master1", op=Op.DELETE)


def test_a_delete_the_old_member_made_is_planned_only_while_the_key_is_as_exported():
    assert plan_row(D, (3, b"stale"), force=False).act is Act.DELETE
    changed = plan_row(D, (8, b"rewritten"), force=False)
    assert changed.act is Act.CHANGED and changed.current_mod_revision == 8
    assert plan_row(D, (8, b"rewritten"), force=True).act is Act.DELETE
    gone = plan_row(D, None, force=False)
    assert gone.act is Act.SAME and not gone.differs
    assert Act.DELETE.acts and Act.PUT.acts and not Act.SAME.acts and not Act.CHANGED.acts


def test_a_delete_line_carries_no_value_and_old_files_read_as_puts(tmp_path):
    d = D.to_json("/var/lib/etcd.bak-x")
    assert d["op"] == "delete" and "value" not in d and d["cluster_mod_revision"] == 3
    old = W.to_json("/x")
    del old["op"]  # a file written before deletes were exported
    f = tmp_path / "e.jsonl"
    f.write_text(json.dumps(d) + "\n" + json.dumps(old) + "\n")
    assert load(f) == [D, W]
