"""consumer.offsets.OffsetTracker: commit only over a contiguous acked prefix, generations, bookkeeping."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from consumer.offsets import OffsetTracker, Ticket


def _tracker(*partitions: int) -> OffsetTracker:
    t = OffsetTracker()
    for p in partitions:
        t.assign(p)
    return t


def test_nothing_committable_before_any_ack() -> None:
    t = _tracker(0)
    assert t.committable() == {}
    t.track(0, 0)
    assert t.committable() == {}
    assert t.open_count(0) == 1


def test_in_order_acks_advance_one_past_the_last_offset() -> None:
    t = _tracker(0)
    tickets = [t.track(0, o) for o in range(3)]
    assert t.ack(tickets[0]) is True
    assert t.committable() == {0: 1}
    assert t.ack(tickets[1]) and t.ack(tickets[2])
    assert t.committable() == {0: 3}
    assert t.open_count(0) == 0


def test_out_of_order_acks_wait_for_the_oldest_open_offset() -> None:
    t = _tracker(0)
    a, b, c = (t.track(0, o) for o in (10, 11, 12))
    t.ack(c)
    assert t.committable() == {}
    t.ack(b)
    assert t.committable() == {}
    assert t.open_count(0) == 3
    t.ack(a)
    assert t.committable() == {0: 13}
    assert t.open_count(0) == 0


def test_a_hole_in_the_middle_stops_the_watermark() -> None:
    t = _tracker(0)
    a, b, c, d = (t.track(0, o) for o in range(4))
    t.ack(a)
    t.ack(c)
    t.ack(d)
    assert t.committable() == {0: 1}  # never beyond the open offset 1
    t.ack(b)
    assert t.committable() == {0: 4}


def test_gaps_in_offsets_of_a_compacted_topic() -> None:
    """Offsets 5, 9, 10: the committable offset is one past the last acked record, gaps are not waited for."""
    t = _tracker(0)
    five, nine, ten = (t.track(0, o) for o in (5, 9, 10))
    t.ack(nine)
    t.ack(ten)
    assert t.committable() == {}
    t.ack(five)
    assert t.committable() == {0: 11}


def test_gap_watermark_after_first_only() -> None:
    t = _tracker(0)
    five, nine, _ten = (t.track(0, o) for o in (5, 9, 10))
    t.ack(five)
    assert t.committable() == {0: 6}
    t.ack(nine)
    assert t.committable() == {0: 10}  # 10 is still open


def test_first_offset_need_not_be_zero() -> None:
    t = _tracker(3)
    t.ack(t.track(3, 1_000_000))
    assert t.committable() == {3: 1_000_001}


def test_partitions_are_independent() -> None:
    t = _tracker(0, 1)
    a0 = t.track(0, 0)
    a1 = t.track(1, 0)
    t.track(0, 1)
    t.ack(a1)
    assert t.committable() == {1: 1}
    t.ack(a0)
    assert t.committable() == {0: 1, 1: 1}


# ---- committed() bookkeeping -----------------------------------------------------------------------


def test_committed_offset_is_not_offered_again() -> None:
    t = _tracker(0)
    a, b = t.track(0, 0), t.track(0, 1)
    t.ack(a)
    assert t.committable() == {0: 1}
    t.committed(0, 1)
    assert t.committable() == {}
    t.ack(b)
    assert t.committable() == {0: 2}
    t.committed(0, 2)
    assert t.committable() == {}


def test_a_late_commit_callback_for_an_older_offset_does_not_regress() -> None:
    t = _tracker(0)
    a, b = t.track(0, 0), t.track(0, 1)
    t.ack(a)
    t.ack(b)
    t.committed(0, 2)
    t.committed(0, 1)  # the callback of an earlier, slower commit
    assert t.committable() == {}


def test_commit_in_flight_then_watermark_moves_on() -> None:
    t = _tracker(0)
    a, b = t.track(0, 0), t.track(0, 1)
    t.ack(a)
    first = t.committable()
    t.ack(b)
    t.committed(0, first[0])  # commit of 1 acknowledged after 2 became committable
    assert t.committable() == {0: 2}


def test_committed_for_an_unowned_partition_is_ignored() -> None:
    t = _tracker(0)
    t.committed(7, 100)
    assert t.committable() == {}
    assert t.owned() == [0]


# ---- generations -----------------------------------------------------------------------------------


def test_ack_after_revoke_is_ignored() -> None:
    t = _tracker(0)
    ticket = t.track(0, 0)
    t.revoke(0)
    assert t.ack(ticket) is False
    assert t.committable() == {}
    assert not t.owns(0)
    assert t.open_count(0) == 0


def test_revoke_then_reassign_makes_old_tickets_stale() -> None:
    t = _tracker(0)
    old = t.track(0, 5)
    t.revoke(0)
    t.assign(0)
    new = t.track(0, 5)  # the new owner re-reads the same offset
    assert new[1] != old[1]  # the generation
    assert t.ack(old) is False
    assert t.committable() == {}, "a stale ack must not move the new assignment's watermark"
    assert t.open_count(0) == 1
    assert t.ack(new) is True
    assert t.committable() == {0: 6}


def test_reassign_without_revoke_also_starts_a_new_generation() -> None:
    t = _tracker(0)
    old = t.track(0, 0)
    t.assign(0)
    assert t.ack(old) is False
    assert t.open_count(0) == 0


def test_reassign_forgets_the_previous_commit_bookkeeping() -> None:
    t = _tracker(0)
    t.ack(t.track(0, 0))
    t.committed(0, 1)
    t.revoke(0)
    t.assign(0)
    assert t.committable() == {}
    t.ack(t.track(0, 1))
    assert t.committable() == {0: 2}


def test_generations_are_unique_across_partitions() -> None:
    t = _tracker(0, 1)
    t0, t1 = t.track(0, 0), t.track(1, 0)
    assert t0[1] != t1[1]  # (partition, generation, offset)
    forged = (0, t1[1], 0)  # right partition, another partition's generation
    assert t.ack(forged) is False
    assert t.committable() == {}


def test_ack_for_a_never_assigned_partition() -> None:
    t = OffsetTracker()
    assert t.ack((3, 1, 0)) is False
    assert t.committable() == {}


def test_owned_and_owns() -> None:
    t = _tracker(2, 0)
    assert sorted(t.owned()) == [0, 2]
    assert t.owns(2) and not t.owns(1)
    t.revoke(2)
    t.revoke(9)  # revoking an unknown partition is harmless
    assert t.owned() == [0]


# ---- committable(partitions=...) -------------------------------------------------------------------


def test_committable_filter() -> None:
    t = _tracker(0, 1, 2)
    for p in (0, 1, 2):
        t.ack(t.track(p, 0))
    assert t.committable() == {0: 1, 1: 1, 2: 1}
    assert t.committable(partitions={1}) == {1: 1}
    assert t.committable(partitions={0, 2, 9}) == {0: 1, 2: 1}
    assert t.committable(partitions=set()) == {}
    assert t.committable(partitions=None) == {0: 1, 1: 1, 2: 1}


# ---- the consumer's position: offsets that hold no record (transaction markers, aborted ranges) ------


def test_position_passes_a_trailing_commit_marker_once_everything_is_acked() -> None:
    """Records 0..9 and the commit marker at 10: the position is 11, and so is the commit at the end."""
    t = _tracker(0)
    tickets = [t.track(0, o) for o in range(10)]
    t.learn_position(0, 11)
    t.ack_all(tickets[:5])
    assert t.committable() == {0: 5}, "the position is not used while a record is open"
    t.ack_all(tickets[5:])
    assert t.committable() == {0: 11}


def test_position_waits_for_every_open_record() -> None:
    t = _tracker(0)
    a, b = t.track(0, 0), t.track(0, 1)
    t.learn_position(0, 7)
    t.ack(b)
    assert t.committable() == {}
    t.ack(a)
    assert t.committable() == {0: 7}


def test_position_alone_when_only_aborted_records_were_read() -> None:
    """An aborted transaction after the last commit: nothing tracked, the position moves the commit on."""
    t = _tracker(0)
    t.ack(t.track(0, 604))
    t.committed(0, 605)
    assert t.committable() == {}
    t.learn_position(0, 707)
    assert t.committable() == {0: 707}
    t.committed(0, 707)
    assert t.committable() == {}


def test_unknown_position_is_ignored() -> None:
    t = _tracker(0)
    t.learn_position(0, -1001)  # OFFSET_INVALID: nothing fetched yet
    assert t.committable() == {}
    t.ack(t.track(0, 3))
    assert t.committable() == {0: 4}


def test_position_never_moves_back_and_never_below_the_watermark() -> None:
    t = _tracker(0)
    t.learn_position(0, 10)
    t.learn_position(0, 5)
    assert t.committable() == {0: 10}
    t.ack(t.track(0, 10))
    t.learn_position(0, 9)
    assert t.committable() == {0: 11}


def test_records_after_the_position_hold_the_commit_again() -> None:
    t = _tracker(0)
    t.learn_position(0, 11)
    t.committed(0, 11)
    ticket = t.track(0, 12)
    assert t.committable() == {}
    t.ack(ticket)
    assert t.committable() == {0: 13}


def test_a_commit_made_at_the_position_never_moves_back_when_records_follow() -> None:
    """Record 0, a commit marker at 1..9: the commit goes to 10; record 10 opens; the commit must not return to 1."""
    t = _tracker(0)
    t.ack(t.track(0, 0))
    t.learn_position(0, 10)
    assert t.committable() == {0: 10}
    t.committed(0, 10)
    ticket = t.track(0, 10)
    assert t.committable() == {}, "a commit below one already made would re-deliver on restart"
    t.ack(ticket)
    assert t.committable() == {0: 11}


def test_position_of_an_earlier_assignment_is_forgotten() -> None:
    t = _tracker(0)
    t.learn_position(0, 50)
    t.revoke(0)
    t.learn_position(0, 60)  # not owned: ignored
    t.assign(0)
    assert t.committable() == {}
    assert t.owned() == [0]


def test_position_respects_the_partition_filter() -> None:
    t = _tracker(0, 1)
    t.learn_position(0, 3)
    t.learn_position(1, 4)
    assert t.committable(partitions={1}) == {1: 4}


# ---- properties ------------------------------------------------------------------------------------


def _expected_watermark(offsets: list[int], acked: set[int]) -> int | None:
    last = None
    for o in offsets:
        if o not in acked:
            break
        last = o + 1
    return last


@st.composite
def _offsets_and_ack_order(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    gaps = draw(st.lists(st.integers(1, 5), min_size=1, max_size=40))
    start = draw(st.integers(0, 10**12))
    offsets = []
    o = start
    for g in gaps:
        offsets.append(o)
        o += g
    order = draw(st.permutations(range(len(offsets))))
    return offsets, list(order)


@given(_offsets_and_ack_order())
def test_random_ack_order_commits_only_contiguous_acked_prefixes(case: tuple[list[int], list[int]]) -> None:
    offsets, order = case
    t = _tracker(0)
    tickets = [t.track(0, o) for o in offsets]
    acked: set[int] = set()
    tracked = set(offsets)
    for i in order:
        assert t.ack(tickets[i]) is True
        acked.add(offsets[i])
        c = t.committable().get(0)
        assert c == _expected_watermark(offsets, acked)
        if c is not None:
            assert all(o in acked for o in offsets if o < c), "committable beyond an open offset"
            assert c - 1 in tracked, "committable offset must be one past a tracked record"
        assert t.open_count(0) == len(offsets) - sum(1 for o in offsets if c is not None and o < c)
    assert t.committable() == {0: offsets[-1] + 1}
    assert t.open_count(0) == 0


@given(_offsets_and_ack_order(), st.lists(st.integers(1, 6), max_size=10), st.integers(0, 3))
def test_acking_a_batch_at_once_equals_acking_one_by_one(
    case: tuple[list[int], list[int]], chunks: list[int], stale: int
) -> None:
    """Delivered batches are acked with ack_all; tickets of an earlier assignment never count."""
    offsets, order = case
    single, bulk = _tracker(0), _tracker(0)
    old = [bulk.track(0, o) for o in range(stale)]  # from an assignment that was revoked since
    bulk.revoke(0)
    bulk.assign(0)
    tickets = [(single.track(0, o), bulk.track(0, o)) for o in offsets]
    pending = [tickets[i] for i in order]
    for size in [*chunks, len(pending)]:
        chunk, pending = pending[:size], pending[size:]
        for one, _ in chunk:
            single.ack(one)
        assert bulk.ack_all([b for _, b in chunk] + old) == len(chunk)
        assert bulk.committable() == single.committable()
        assert bulk.open_count(0) == single.open_count(0)
    assert bulk.committable() == {0: offsets[-1] + 1}


_OPS = st.lists(st.tuples(st.sampled_from(["track", "ack", "commit"]), st.integers(0, 1000)), max_size=120)


@given(st.lists(st.integers(1, 5), min_size=1, max_size=40), _OPS)
def test_interleaved_track_ack_commit(gaps: list[int], ops: list[tuple[str, int]]) -> None:
    """Tracking continues while acks arrive and commits are acknowledged; the invariant holds at every step."""
    offsets = [sum(gaps[:i]) for i in range(len(gaps))]
    t = _tracker(0)
    pending: list[tuple[int, Ticket]] = []
    tracked: list[int] = []
    acked: set[int] = set()
    committed: int | None = None
    it = iter(offsets)

    def check() -> None:
        model = _expected_watermark(tracked, acked)
        got = t.committable().get(0)
        assert got == (None if model == committed else model)
        if got is not None:
            assert all(o in acked for o in tracked if o < got)
            assert got - 1 in tracked

    # The drawn operations, then whatever is left: track the rest and ack every pending record.
    tail = [("track", 0)] * len(offsets) + [("ack", 0)] * len(offsets) + [("commit", 0)]
    for kind, n in [*ops, *tail]:
        if kind == "track":
            o = next(it, None)
            if o is not None:
                pending.append((o, t.track(0, o)))
                tracked.append(o)
        elif kind == "ack" and pending:
            o, ticket = pending.pop(n % len(pending))
            assert t.ack(ticket)
            acked.add(o)
        elif kind == "commit":
            for p, off in t.committable().items():
                t.committed(p, off)
                committed = off
        check()
    assert committed == offsets[-1] + 1
    assert t.committable() == {}


class TrackerMachine(RuleBasedStateMachine):
    """Two partitions, revokes and re-assigns, stale tickets from every earlier generation."""

    def __init__(self) -> None:
        super().__init__()
        self.t = OffsetTracker()
        self.owned: dict[int, dict] = {}
        self.stale: list[Ticket] = []

    def _fresh(self, p: int) -> None:
        self.t.assign(p)
        self.owned[p] = {
            "next": 0,
            "tracked": [],
            "acked": set(),
            "open": [],
            "committed": None,
            "position": None,
            "floor": None,
        }

    @rule(p=st.sampled_from([0, 1]))
    def assign(self, p: int) -> None:
        if p in self.owned:
            self.stale.extend(ticket for _, ticket in self.owned[p]["open"])
        self._fresh(p)

    @precondition(lambda self: self.owned)
    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        p = data.draw(st.sampled_from(sorted(self.owned)))
        self.stale.extend(ticket for _, ticket in self.owned.pop(p)["open"])
        self.t.revoke(p)

    @precondition(lambda self: self.owned)
    @rule(data=st.data(), gap=st.integers(1, 3))
    def track(self, data: st.DataObject, gap: int) -> None:
        p = data.draw(st.sampled_from(sorted(self.owned)))
        s = self.owned[p]
        o = s["next"]
        s["next"] = o + gap
        if s["position"] is not None and set(s["tracked"]) <= s["acked"]:
            s["floor"] = s["position"]  # a commit may have gone to the position: the watermark starts there
        s["tracked"].append(o)
        s["open"].append((o, self.t.track(p, o)))

    @precondition(lambda self: any(s["open"] for s in self.owned.values()))
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        p = data.draw(st.sampled_from(sorted(p for p, s in self.owned.items() if s["open"])))
        s = self.owned[p]
        o, ticket = s["open"].pop(data.draw(st.integers(0, len(s["open"]) - 1)))
        assert self.t.ack(ticket) is True
        s["acked"].add(o)

    @precondition(lambda self: self.owned)
    @rule(data=st.data(), skipped=st.integers(0, 3))
    def learn_position(self, data: st.DataObject, skipped: int) -> None:
        """The consumer handed out every tracked record and skipped `skipped` offsets (markers, aborted)."""
        p = data.draw(st.sampled_from(sorted(self.owned)))
        s = self.owned[p]
        s["next"] += skipped
        s["position"] = s["next"]
        self.t.learn_position(p, s["next"])

    @precondition(lambda self: self.stale)
    @rule(data=st.data())
    def stale_ack(self, data: st.DataObject) -> None:
        ticket = data.draw(st.sampled_from(self.stale))
        before = self.t.committable()
        assert self.t.ack(ticket) is False
        assert self.t.committable() == before

    @rule()
    def commit(self) -> None:
        for p, off in self.t.committable().items():
            self.t.committed(p, off)
            self.owned[p]["committed"] = off

    @staticmethod
    def _model(s: dict) -> int | None:
        w = _expected_watermark(s["tracked"], s["acked"])
        if s["floor"] is not None:
            w = s["floor"] if w is None else max(w, s["floor"])
        if s["position"] is not None and set(s["tracked"]) <= s["acked"]:
            w = s["position"] if w is None else max(w, s["position"])
        return w

    @invariant()
    def committable_matches_model(self) -> None:
        expected = {}
        for p, s in self.owned.items():
            w = self._model(s)
            if w is not None and w != s["committed"]:
                expected[p] = w
        assert self.t.committable() == expected
        assert sorted(self.t.owned()) == sorted(self.owned)
        for p, s in self.owned.items():
            w = _expected_watermark(s["tracked"], s["acked"])
            below = sum(1 for o in s["tracked"] if w is not None and o < w)
            assert self.t.open_count(p) == len(s["tracked"]) - below


TrackerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_tracker_state_machine = TrackerMachine.TestCase


@pytest.mark.parametrize("order", [[2, 1, 0], [1, 2, 0], [0, 2, 1], [2, 0, 1]])
def test_every_order_of_three_ends_at_the_same_offset(order: list[int]) -> None:
    t = _tracker(0)
    tickets = [t.track(0, o) for o in (5, 9, 10)]
    for i in order:
        t.ack(tickets[i])
    assert t.committable() == {0: 11}
