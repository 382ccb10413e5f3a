"""Record framing, value codec and store options."""

from __future__ import annotations

import dataclasses
import math
import os
import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import msgpack_values

from engine.errors import CorruptionError, EncodeError, InvalidArgumentError, SeglogError
from engine.log import codec, record
from engine.log.options import Durability, StoreOptions
from engine.log.record import (
    FLAG_LZ4,
    HEADER,
    HEADER_SIZE,
    RecordType,
    TornRecord,
    read_record,
)

MAX = 16 << 20
PATH = "test.seg"

# ---------------------------------------------------------------- strategies

values = msgpack_values(text_size=20, binary_size=40, width=4, leaves=12)


def decode_one(rec: bytes, offset: int = 0) -> record.RecordView:
    return read_record(rec, offset, len(rec), MAX, PATH)


def events_record(vals: list, stream_id: int = 7, first_seq: int = 100, compress: bool = False) -> bytes:
    packed, reference = codec.pack_array(vals)
    return record.encode_events(stream_id, first_seq, len(vals), packed, reference, compress)


def blob_record(stream_id: int, key: bytes, value: object) -> bytes:
    packed, reference = codec.pack(value)
    return record.encode_blob(stream_id, record.key_hash(key), key, packed, reference)


def round_trip(value: object) -> object:
    data, reference = codec.pack(value)
    return codec.unpack(data, reference)


# ---------------------------------------------------------------- EVENTS


def test_events_record_header_fields_and_values() -> None:
    vals = [{"type": "input", "code": "(+ 1 2)"}, 3, None, [1, "x"], b"\x00\xff"]
    rec = events_record(vals, stream_id=42, first_seq=1000)
    view = decode_one(rec)
    assert view.rtype == RecordType.EVENTS
    assert view.stream_id == 42
    assert view.seq == 1000
    assert view.count == len(vals)
    assert view.offset == 0
    assert view.end - view.offset == len(rec) == view.end
    assert view.length == len(rec) - HEADER_SIZE
    assert view.flags == 0
    assert view.events(MAX) == vals
    assert [view.event(i, MAX) for i in range(len(vals))] == vals


def test_records_read_at_an_offset_inside_a_larger_buffer() -> None:
    first = events_record(["one", "two"], stream_id=1, first_seq=0)
    second = events_record(["three"], stream_id=2, first_seq=5)
    buf = b"\xaa" * 32 + first + second
    v1 = read_record(buf, 32, len(buf), MAX, PATH)
    assert v1.end == 32 + len(first)
    v2 = read_record(buf, v1.end, len(buf), MAX, PATH)
    assert v2.end == len(buf)
    assert (v1.stream_id, v1.seq, v1.events(MAX)) == (1, 0, ["one", "two"])
    assert (v2.stream_id, v2.seq, v2.events(MAX)) == (2, 5, ["three"])
    assert v2.event(0, MAX) == "three"
    assert bytes(v2.payload()) == second[HEADER_SIZE:]


def test_file_offset_differs_from_buffer_position() -> None:
    # The segment reads a record into its own buffer: base 0, but the record sits at 4096 in the file.
    rec = events_record(["a", "b"])
    view = read_record(rec, 0, len(rec), MAX, PATH, 4096)
    assert (view.base, view.offset, view.end) == (0, 4096, 4096 + len(rec))
    assert view.events(MAX) == ["a", "b"]
    damaged = bytearray(rec)
    damaged[-1] ^= 0x40
    with pytest.raises(CorruptionError) as info:
        read_record(bytes(damaged), 0, len(damaged), MAX, PATH, 4096)
    assert info.value.offset == 4096
    with pytest.raises(TornRecord):
        read_record(rec, 0, len(rec) - 1, MAX, PATH, 4096)


def test_large_compressible_events_compress_the_record() -> None:
    big = "(defun f (x) (* x x)) " * 500  # ~11 KB, very compressible
    vals = ["small", big, 7, big + "!"]
    rec = events_record(vals)
    view = decode_one(rec)
    assert view.flags & FLAG_LZ4  # large events on average: compressed without being asked
    assert len(rec) < len(big)  # both big events shrank
    assert view.events(MAX) == vals
    assert [view.event(i, MAX) for i in range(len(vals))] == vals


def test_incompressible_large_event_is_stored_raw() -> None:
    noise = os.urandom(4000)
    view = decode_one(events_record([noise]))
    assert view.flags == 0
    assert view.length > len(noise)
    assert view.event(0, MAX) == noise


def test_event_bounds_delimit_each_event() -> None:
    vals = ["a", {"b": [1, 2]}, None, "x" * 300]
    view = decode_one(events_record(vals))
    bounds = view.bounds(MAX)
    assert len(bounds) == len(vals) + 1
    assert bounds[-1] == view.length
    payload = bytes(view.payload())
    assert [codec.unpack(payload[bounds[i] : bounds[i + 1]]) for i in range(len(vals))] == vals


def test_events_below_the_threshold_are_not_compressed_even_if_they_would_shrink() -> None:
    value = "a" * (codec.COMPRESS_MIN_BYTES - 10)
    assert len(codec.pack(value)[0]) < codec.COMPRESS_MIN_BYTES
    view = decode_one(events_record([value, value]))
    assert view.flags == 0
    assert view.events(MAX) == [value, value]


@settings(max_examples=60, deadline=None, database=None)
@given(
    st.lists(values | st.text(min_size=600, max_size=2000), min_size=1, max_size=8),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**63),
)
def test_events_round_trip(vals: list, stream_id: int, first_seq: int) -> None:
    view = decode_one(events_record(vals, stream_id, first_seq))
    assert (view.stream_id, view.seq, view.count) == (stream_id, first_seq, len(vals))
    assert view.events(MAX) == vals
    for i, v in enumerate(vals):
        assert view.event(i, MAX) == v


def test_whole_record_compression_when_asked_and_it_pays() -> None:
    vals = [{"type": "output", "text": f"line {i} of the REPL transcript"} for i in range(40)]
    plain = events_record(vals)
    rec = events_record(vals, compress=True)
    view = decode_one(rec)
    assert view.flags & FLAG_LZ4
    assert len(rec) < len(plain) - len(plain) // 8
    assert view.count == len(vals)
    assert view.events(MAX) == vals
    assert [view.event(i, MAX) for i in range(len(vals))] == vals
    flat = view.expanded(MAX)
    assert not flat.flags & FLAG_LZ4
    assert flat.events(MAX) == vals
    assert flat.length == len(plain) - HEADER_SIZE
    # Reference-encoded values compress the same way.
    odd = ["\ud83d" + v["text"] for v in vals]
    view = decode_one(events_record(odd, compress=True))
    assert view.flags & FLAG_LZ4 and view.flags & record.FLAG_REFERENCE
    assert view.events(MAX) == odd
    assert view.event(39, MAX) == odd[39]


def test_whole_record_compression_skipped_when_it_does_not_pay() -> None:
    noise = [os.urandom(100) for _ in range(10)]
    view = decode_one(events_record(noise, compress=True))
    assert view.flags == 0
    assert view.events(MAX) == noise
    small = ["x" * 30, "y"]  # compressible but small events, not asked: stored raw
    view = decode_one(events_record(small))
    assert not view.flags & FLAG_LZ4
    assert view.events(MAX) == small


def test_compressed_events_record_with_impossible_count_is_corruption() -> None:
    payload = events_record(["abc"] * 200)[HEADER_SIZE:]
    small = codec.maybe_compress(payload)
    assert small is not None
    view = decode_one(record.frame(RecordType.EVENTS, FLAG_LZ4, 1, 10_000, 0, small))
    with pytest.raises(CorruptionError):
        view.events(MAX)
    with pytest.raises(CorruptionError):
        view.event(0, MAX)
    # The decompressed size is checked against the limit.
    ok = decode_one(record.frame(RecordType.EVENTS, FLAG_LZ4, 1, 200, 0, small))
    assert ok.events(MAX) == ["abc"] * 200
    with pytest.raises(CorruptionError, match="more than the limit"):
        ok.events(len(payload) - 1)


# ---------------------------------------------------------------- BLOB / other records


def test_blob_record_round_trip() -> None:
    key = "ключ".encode()
    value = {"a": [1, 2, 3], "b": "\ud83d"}
    rec = blob_record(9, key, value)
    view = decode_one(rec)
    assert view.rtype == RecordType.BLOB
    assert view.stream_id == 9
    assert view.seq == record.key_hash(key)
    assert view.flags == record.FLAG_REFERENCE  # the lone surrogate needs the reference decoder
    assert view.blob_key() == key
    assert view.blob_value(MAX) == value


def test_large_blob_compressed_when_it_pays_and_raw_otherwise() -> None:
    text = "hello world " * 1000
    rec = blob_record(1, b"k", text)
    view = decode_one(rec)
    assert view.flags & FLAG_LZ4
    assert len(rec) < len(text) // 2
    assert view.blob_value(MAX) == text

    noise = os.urandom(3000)
    view = decode_one(blob_record(1, b"k", noise))
    assert view.flags == 0
    assert view.blob_value(MAX) == noise


def test_key_hash_is_deterministic_and_distinguishes_keys() -> None:
    assert record.key_hash(b"a") == record.key_hash(b"a")
    assert record.key_hash(b"a") != record.key_hash(b"b")


def test_stream_create_record_carries_the_name() -> None:
    name = "session é 🙂"
    view = decode_one(record.frame(RecordType.STREAM_CREATE, 0, 3, 0, 0, name.encode()))
    assert view.rtype == RecordType.STREAM_CREATE
    assert view.stream_id == 3
    assert view.name() == name


def test_stream_create_record_with_invalid_utf8_name_is_corruption() -> None:
    view = decode_one(record.frame(RecordType.STREAM_CREATE, 0, 3, 0, 0, b"\xff\xfe"))
    with pytest.raises(CorruptionError):
        view.name()


def test_stream_drop_record_has_empty_payload() -> None:
    rec = record.frame(RecordType.STREAM_DROP, 0, 4, 0, 0, b"")
    assert len(rec) == HEADER_SIZE
    view = decode_one(rec)
    assert (view.rtype, view.stream_id, view.length) == (RecordType.STREAM_DROP, 4, 0)


# ---------------------------------------------------------------- damage detection


def _sample_records() -> list[bytes]:
    return [
        events_record([1, "two", {"three": 3}]),
        events_record(["x" * 2000, "y"]),  # large events: compressed record
        blob_record(2, b"key", [1, 2, 3]),
        blob_record(2, b"k", "z" * 3000),
        events_record(["\ud83d", {1: "int key"}]),  # reference-encoded
        events_record([f"event number {i} of the session" for i in range(60)], compress=True),
        record.frame(RecordType.STREAM_CREATE, 0, 5, 0, 0, b"name"),
        record.frame(RecordType.STREAM_DROP, 0, 5, 0, 0, b""),
    ]


def test_sample_records_cover_every_encoding() -> None:
    views = [decode_one(r) for r in _sample_records()]
    assert {v.rtype for v in views} == set(RecordType)
    flags = [v.flags for v in views]
    for flag in (FLAG_LZ4, record.FLAG_REFERENCE):
        assert any(f & flag for f in flags)
    assert any(v.rtype == RecordType.EVENTS and v.flags & FLAG_LZ4 for v in views)


@pytest.mark.parametrize("index", range(len(_sample_records())))
def test_flipping_any_single_byte_is_detected(index: int) -> None:
    rec = _sample_records()[index]
    decode_one(rec)  # the intact record is accepted
    for pos in range(len(rec)):
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(rec)
            damaged[pos] ^= mask
            with pytest.raises((CorruptionError, TornRecord)):
                read_record(bytes(damaged), 0, len(damaged), MAX, PATH)


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(values, min_size=1, max_size=4), st.data())
def test_flipping_a_random_bit_is_detected(vals: list, data: st.DataObject) -> None:
    rec = bytearray(events_record(vals))
    pos = data.draw(st.integers(0, len(rec) - 1))
    bit = data.draw(st.integers(0, 7))
    rec[pos] ^= 1 << bit
    with pytest.raises((CorruptionError, TornRecord)):
        read_record(bytes(rec), 0, len(rec), MAX, PATH)


def test_record_cut_short_is_torn() -> None:
    rec = events_record(["a", "b", "c"])
    for cut in (0, 1, HEADER_SIZE - 1, HEADER_SIZE, len(rec) - 1):
        with pytest.raises(TornRecord):
            read_record(rec, 0, cut, MAX, PATH)
        with pytest.raises(TornRecord):
            read_record(rec[:cut] + b"\x00" * 64, 0, cut, MAX, PATH)


def test_record_longer_than_max_record_bytes_is_corruption_not_torn() -> None:
    rec = events_record([os.urandom(3000)])
    assert decode_one(rec).events(MAX)
    with pytest.raises(CorruptionError, match="exceeds the limit"):
        read_record(rec, 0, len(rec), 1024, PATH)


def test_corruption_error_carries_path_and_offset() -> None:
    rec = bytearray(events_record(["a"]))
    rec[-1] ^= 1
    buf = b"\x00" * 40 + bytes(rec)
    with pytest.raises(CorruptionError) as info:
        read_record(buf, 40, len(buf), MAX, "some/file.seg")
    assert info.value.path == "some/file.seg"
    assert info.value.offset == 40
    assert "some/file.seg" in str(info.value) and "40" in str(info.value)
    assert isinstance(info.value, SeglogError)


def test_unknown_record_type_with_a_valid_checksum_is_corruption() -> None:
    with pytest.raises(CorruptionError, match="unknown record type"):
        decode_one(record.frame(99, 0, 1, 0, 0, b"abc"))


def test_events_record_with_impossible_count_is_corruption() -> None:
    payload = events_record(["a"])[HEADER_SIZE:]
    for count in (0, 1000):
        with pytest.raises(CorruptionError, match="impossible count"):
            decode_one(record.frame(RecordType.EVENTS, 0, 1, count, 0, payload))


def test_checksummed_but_malformed_event_payload_is_corruption() -> None:
    # The array's second event is cut short; the checksum is valid.
    payload = b"\x92\xa5ab"
    view = decode_one(record.frame(RecordType.EVENTS, 0, 1, 2, 0, payload))
    for call in (lambda: view.event(0, MAX), lambda: view.events(MAX), lambda: view.bounds(MAX)):
        with pytest.raises(CorruptionError):
            call()
    # Array holds two events but the header says one.
    payload = b"\x92\x01\x02"
    view = decode_one(record.frame(RecordType.EVENTS, 0, 1, 1, 0, payload))
    with pytest.raises(CorruptionError):
        view.events(MAX)
    with pytest.raises(CorruptionError):
        view.event(0, MAX)


def test_header_layout_is_32_bytes_little_endian() -> None:
    assert HEADER_SIZE == 32
    rec = events_record(["v"], stream_id=0x01020304, first_seq=0x0A0B0C0D0E0F)
    checksum, length, rtype, _flags, _res, sid, count, seq = HEADER.unpack_from(rec, 0)
    assert (length, rtype, sid, count, seq) == (len(rec) - 32, 1, 0x01020304, 1, 0x0A0B0C0D0E0F)
    assert checksum == record.checksum_of(rec[8:])


# ---------------------------------------------------------------- codec


@pytest.mark.parametrize("text", ["\ud83d", "a\udc00b", "\udfff\ud800", "🙂\ud83d"])
def test_lone_surrogates_round_trip_through_the_reference_encoder(text: str) -> None:
    data, reference = codec.pack(text)
    assert reference
    assert codec.unpack(data, True) == text
    assert round_trip({text: [text]}) == {text: [text]}
    assert codec.unpack_value(codec.pack_value(text)) == text


def test_plain_values_use_the_fast_encoder_and_decode_with_either() -> None:
    value = {"type": "input", "code": "(+ 1 2)", "n": [1, 2.5, None, True, b"\x00"]}
    data, reference = codec.pack(value)
    assert not reference
    assert codec.unpack(data) == value
    assert codec.unpack(data, True) == value  # standard msgpack
    assert msgpack.unpackb(data, raw=False) == value


def test_pack_array_uses_one_encoder_for_the_whole_batch() -> None:
    packed, reference = codec.pack_array(["plain", 1])
    assert not reference
    assert codec.unpack(packed) == ["plain", 1]
    for n in (1, 15, 16, 70000):  # every msgpack array header size
        vals = ["plain", "\ud83d", {2: "x"}] * n
        packed, reference = codec.pack_array(vals)
        assert reference
        assert codec.unpack(packed, True) == vals
        assert len(codec.array_bounds(packed, len(vals))) == len(vals) + 1


def test_reference_flag_set_on_records_that_need_it() -> None:
    assert not decode_one(events_record(["plain"])).flags & record.FLAG_REFERENCE
    for vals in (["\ud83d"], [{1: 2}], ["ok", "x\udc00"]):
        view = decode_one(events_record(vals))
        assert view.flags & record.FLAG_REFERENCE
        assert view.events(MAX) == vals
        assert [view.event(i, MAX) for i in range(len(vals))] == vals
    view = decode_one(blob_record(1, b"k", "\ud83d" * 400))  # reference + compressed
    assert view.flags & record.FLAG_REFERENCE and view.flags & FLAG_LZ4
    assert view.blob_value(MAX) == "\ud83d" * 400


@settings(max_examples=100, deadline=None, database=None)
@given(values)
def test_codec_round_trip(value: object) -> None:
    assert round_trip(value) == value
    assert codec.unpack_value(codec.pack_value(value)) == value


def test_codec_tuples_come_back_as_lists_and_int_keys_survive() -> None:
    assert round_trip((1, (2, 3))) == [1, [2, 3]]
    assert round_trip({1: "a", -2: "b"}) == {1: "a", -2: "b"}


def test_codec_subclasses_and_integer_limits() -> None:
    class MyDict(dict):  # type: ignore[type-arg]
        pass

    class MyStr(str):
        pass

    assert round_trip(MyDict(a=1)) == {"a": 1}
    assert round_trip(MyStr("s")) == "s"
    for n in (2**64 - 1, 2**63, -(2**63), 0, -1):
        assert round_trip(n) == n


@pytest.mark.parametrize(
    "bad",
    [object(), 2**64, -(2**63) - 1, {1, 2}, [1, object()], {"k": {1}}, 1j, ["\ud83d", object()]],
    ids=repr,
)
def test_pack_rejects_unencodable_values(bad: object) -> None:
    with pytest.raises(EncodeError) as info:
        codec.pack(bad)
    assert isinstance(info.value, InvalidArgumentError)
    assert isinstance(info.value, ValueError)
    with pytest.raises(EncodeError):
        codec.pack_array(["fine", bad])
    with pytest.raises(EncodeError):
        codec.pack_value(bad)


def test_reference_packer_is_clean_after_a_failure_midway() -> None:
    # A failure after part of the value was packed must not leak bytes into the next value.
    with pytest.raises(EncodeError):
        codec.pack(["\ud83d" * 10, {"k": object()}])
    data, reference = codec.pack("\ud83d")
    assert reference
    assert data == msgpack.packb("\ud83d", use_bin_type=True, unicode_errors="surrogatepass")
    with pytest.raises(EncodeError):
        codec.pack_array([1, {2: 3}, ["x" * 100, object()]])
    packed, reference = codec.pack_array([{1: "one"}, "two"])
    assert reference
    assert packed == msgpack.packb([{1: "one"}, "two"], use_bin_type=True)


def test_str_and_bytes_stay_distinct() -> None:
    assert round_trip("ab") == "ab"
    assert round_trip(b"ab") == b"ab"
    assert round_trip(bytearray(b"ab")) == b"ab"
    assert round_trip(["\ud800", b"ab"]) == ["\ud800", b"ab"]


def test_unpack_value_rejects_a_missing_prefix() -> None:
    with pytest.raises(CorruptionError):
        codec.unpack_value(b"")
    with pytest.raises(CorruptionError):
        codec.unpack_value(b"\x07" + codec.pack(1)[0])


def test_maybe_compress_and_decompress() -> None:
    raw = b"abcdefgh" * 200
    small = codec.maybe_compress(raw)
    assert small is not None
    assert len(small) <= len(raw) - len(raw) // 8
    assert struct.unpack_from("<I", small)[0] == len(raw)
    assert codec.decompress(small, MAX) == raw
    assert codec.maybe_compress(raw[: codec.COMPRESS_MIN_BYTES - 1]) is None
    assert codec.maybe_compress(os.urandom(4096)) is None


def test_decompress_rejects_damaged_input() -> None:
    raw = b"0123456789" * 100
    small = codec.maybe_compress(raw)
    assert small is not None
    with pytest.raises(CorruptionError, match="shorter"):
        codec.decompress(small[:3], MAX)
    with pytest.raises(CorruptionError, match="more than the limit"):
        codec.decompress(small, len(raw) - 1)
    with pytest.raises(CorruptionError):
        codec.decompress(small[:4] + b"\xff" * 20, MAX)
    # A length prefix that lies about the size.
    with pytest.raises(CorruptionError):
        codec.decompress(struct.pack("<I", len(raw) + 5) + small[4:], MAX)


# ---------------------------------------------------------------- options


def test_option_defaults() -> None:
    opts = StoreOptions()
    assert opts.durability is Durability.PROCESS
    assert opts.segment_bytes == 64 << 20
    assert opts.max_record_bytes == 16 << 20
    assert opts.flush_interval == 0.2
    assert opts.buffer_bytes == 1 << 20
    assert opts.readonly is False
    assert opts.create is True
    assert opts.compress_events is False


@pytest.mark.parametrize("mode", ["process", "power", "relaxed", Durability.POWER])
def test_durability_accepts_strings_and_enum(mode: str) -> None:
    opts = StoreOptions(durability=mode)
    assert isinstance(opts.durability, Durability)
    assert opts.durability.value == str(getattr(mode, "value", mode))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"durability": "fast"},
        {"durability": "POWER"},
        {"durability": None},
        {"segment_bytes": 4095},
        {"segment_bytes": 0},
        {"max_record_bytes": 1023},
        {"max_record_bytes": 0x7FFF_0001},
        {"flush_interval": 0},
        {"flush_interval": -1.0},
        {"flush_interval": math.nan},
    ],
    ids=repr,
)
def test_invalid_options_rejected(kwargs: dict) -> None:
    with pytest.raises(InvalidArgumentError):
        StoreOptions(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"segment_bytes": 4096}, {"max_record_bytes": 1024}, {"max_record_bytes": 0x7FFF_0000}, {"flush_interval": 1e-3}],
    ids=repr,
)
def test_boundary_options_accepted(kwargs: dict) -> None:
    opts = StoreOptions(**kwargs)
    for name, value in kwargs.items():
        assert getattr(opts, name) == value


def test_options_are_frozen() -> None:
    opts = StoreOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.segment_bytes = 5000  # type: ignore[misc]
