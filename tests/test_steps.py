"""The table of step records: decoded on first use, shared copies copied on first change."""

from __future__ import annotations

from expkit import Status, StepRecord
from expkit._steps import StepRecords


class TestSharedCopy:
    """A shared copy reads its owner's table until it changes its own."""

    def test_reads_the_owner_table(self) -> None:
        """Records (stored forms included) read through a shared copy as through its owner."""
        records = StepRecords({"a": StepRecord("a", Status.DONE)})
        records.put_state("b", StepRecord("b", Status.FAILED, attempts=2).to_state())
        view = records.shared()
        assert view["a"].status is Status.DONE
        assert view["b"].attempts == 2
        assert view.status("b") is Status.FAILED

    def test_changes_stay_in_the_copy(self) -> None:
        """Setting, storing and deleting records in a shared copy leave the owner's table alone."""
        records = StepRecords({"a": StepRecord("a", Status.DONE)})
        view = records.shared()
        view["b"] = StepRecord("b", Status.RUNNING)
        view.put_state("c", StepRecord("c").to_state())
        del view["a"]
        assert set(records) == {"a"}
        assert set(view) == {"b", "c"}
        records["d"] = StepRecord("d")
        assert "d" not in view
