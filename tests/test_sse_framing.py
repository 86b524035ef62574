"""SSE framing (reference_worker/sse.py): any payload survives the wire as one event."""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference_worker import sse

payloads = st.dictionaries(st.text(max_size=8), st.none() | st.booleans() | st.integers() | st.text(), max_size=5)


@given(name=st.sampled_from(sse.EVENT_TYPES), data=payloads)
def test_every_event_is_one_event_line_one_data_line_and_a_blank_line(name, data):
    wire = sse.format_event(name, data).decode("utf-8")
    # SSE splits lines on CR, LF and CRLF: none may hide inside the JSON.
    lines = wire.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    assert lines[0] == f"event: {name}" and lines[1].startswith("data: ") and lines[2:] == ["", ""]
    assert json.loads(lines[1][len("data: "):]) == data


def test_only_the_spec_event_types_can_be_framed():
    with pytest.raises(ValueError):
        sse.format_event("done", {})


def test_a_comment_is_a_line_sse_clients_ignore():
    assert sse.format_comment("queued") == b": queued\n\n"


@given(events=st.lists(st.tuples(st.sampled_from(sse.EVENT_TYPES), payloads), max_size=6))
def test_what_is_framed_reads_back_in_order_and_comments_are_skipped(events):
    wire = sse.format_comment("queued") + b"".join(sse.format_event(name, data) for name, data in events)
    read = list(sse.read_events(wire.decode("utf-8").split("\n")))
    assert [(e.name, e.data) for e in read] == events
